//! The relay's prometheus metrics after real reservations and circuits: what an operator
//! scraping the registry sees.

mod common;

use std::time::Duration;

use common::*;
use meshwire_core::Keypair;
use meshwire_relay::circuit::CircuitEndReason;
use meshwire_relay::client;
use meshwire_relay::{BehaviourConfig, RelayMetrics, ServerConfig, ServerEvent};
use prometheus_client::registry::Registry;

/// The value of the sample `name` (with its labels, as encoded) in `text`.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_reservations_circuits_and_bytes() {
    let mut registry = Registry::default();
    let metrics = RelayMetrics::register(&mut registry);
    let mut relay = start_relay_with(
        ServerConfig {
            max_reservations: 1,
            max_circuit_duration: Some(Duration::from_secs(1)),
            ..ServerConfig::default()
        },
        BehaviourConfig::default(),
        Some(metrics.clone()),
    )
    .await;

    let mut listener = start_client(client::Config::default());
    listener.reserve(&relay.addr).await;
    // A second reservation is over the limit; a circuit to a peer without one is refused.
    let mut refused = start_client(client::Config::default());
    refused
        .try_reserve(&relay.addr)
        .await
        .expect_err("the relay is full");
    let mut dialer = start_client(client::Config::default());
    dialer
        .dial_circuit(&relay.addr, Keypair::generate().peer_id())
        .await
        .expect_err("no reservation");
    // A circuit that relays pings until its duration limit.
    dialer
        .dial_circuit(&relay.addr, listener.peer)
        .await
        .expect("relayed connection");
    let end = relay
        .wait_event("the circuit's end", |e| match e {
            ServerEvent::CircuitClosed { end, .. } => Some(*end),
            _ => None,
        })
        .await;
    assert_eq!(end.reason, CircuitEndReason::DurationLimit);
    assert!(end.total_bytes() > 0);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    println!("{text}");
    let expect = [
        ("relay_reservations", 1),
        ("relay_reservations_accepted_total{kind=\"new\"}", 1),
        (
            "relay_reservations_refused_total{reason=\"max_reservations\"}",
            1,
        ),
        ("relay_circuits_opened_total", 1),
        ("relay_circuits_refused_total{reason=\"no_reservation\"}", 1),
        ("relay_circuits_closed_total{reason=\"duration_limit\"}", 1),
        ("relay_circuits", 0),
        ("relay_bytes_relayed_total", end.total_bytes()),
    ];
    for (name, value) in expect {
        assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
    }
    // The handle reads the same values.
    assert_eq!(metrics.reservations(), 1);
    assert_eq!(metrics.circuits_opened(), 1);
    assert_eq!(metrics.bytes_relayed(), end.total_bytes());
    assert_eq!(metrics.reservations_refused("max_reservations"), 1);
    assert_eq!(metrics.circuits_refused("no_reservation"), 1);
    assert_eq!(metrics.circuits_closed("duration_limit"), 1);
}
