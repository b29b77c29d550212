//! The versioned binary codec: `Writer`/`Reader` carrying the negotiated transport version, `Encode`/`Decode`.
