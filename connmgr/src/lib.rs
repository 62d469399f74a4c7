//! Connection manager (being written).
