//! A service. `transport_version!("in_a_doc_comment")` is not a reference.

pub mod search;

// transport_version!("commented_out") is not a reference either.
pub fn encode(v: TransportVersion) {
    if v.supports(transport_version!("old_field")) {
        write_old_field();
    }
}
