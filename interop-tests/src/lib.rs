//! Tests of meshwire against real rust-libp2p peers live in `tests/`; this library holds
//! their shared support: [`natlab`], the network-namespace NAT lab, and [`delay_relay`], a
//! UDP forwarder adding a delay each way (round trips made visible on loopback).
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod delay_relay;
pub mod natlab;
mod nfqueue;
