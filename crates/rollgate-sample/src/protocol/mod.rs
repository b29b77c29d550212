//! The sample protocol: one module per protocol version and the top-level
//! enum over the supported range. Retiring a version: delete its module,
//! raise the floor of `supported`, and fix every place the compiler names.

pub mod v1;
pub mod v2;

rollgate::protocol_versions! {
    supported = 1..=2;
    /// Every message of the sample protocol, by protocol version.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Msg {
        1 => V1(v1::Msg),
        2 => V2(v2::Msg),
    }
}
