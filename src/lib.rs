//! meshwire
