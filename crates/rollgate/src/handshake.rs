//! The version handshake: protocol and transport version negotiation, authenticated with the cluster secret.
