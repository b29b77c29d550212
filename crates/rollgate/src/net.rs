//! Connections locked to the negotiated protocol and transport versions: typed send and receive over TCP.
