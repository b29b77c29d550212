//! Protocol versions: one message set per version, one module per version, dispatch over the supported range.
