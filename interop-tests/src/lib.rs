//! Tests of meshwire against real rust-libp2p peers live in `tests/`.
