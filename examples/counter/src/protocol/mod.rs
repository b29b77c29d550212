//! The counter protocol: one module per protocol version and [`Msg`] over
//! them. Retiring v1 later means deleting `v1.rs`, raising the floor to
//! `2..=2` and fixing every place the compiler then names.

pub mod v1;
pub mod v2;

rollgate::protocol_versions! {
    supported = 1..=2;
    /// Every message of the counter protocol, by protocol version.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Msg {
        1 => V1(v1::Msg),
        2 => V2(v2::Msg),
    }
}
