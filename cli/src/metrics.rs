//! The registry served at `/metrics`: every crate's metrics (`swarm_*`, `rcmgr_*`,
//! `connmgr_*`, `relay_*`, registered by [`crate::node::build`]) and the CLI's gauges, read
//! from a [`Status`] snapshot at each scrape:
//!
//! | metric | kind | meaning |
//! | --- | --- | --- |
//! | `meshwire_peers` | gauge | connected peers |
//! | `meshwire_connections{kind}` | gauge | connections, `kind` = `direct` or `relayed` |
//! | `meshwire_ping_rtt_seconds_mean` | gauge | mean of the peers' last ping RTTs |
//! | `meshwire_kad_routing_table_peers` | gauge | peers in kademlia's routing table |
//! | `meshwire_kad_records` | gauge | records in kademlia's local store |
//! | `meshwire_kad_provider_keys` | gauge | keys with provider records in kademlia's local store |
//! | `meshwire_swim_members{realm,state}` | gauge | SWIM members by state (`alive`, `suspect`, `failed`, `left`) |
//! | `meshwire_swim_datagrams_sent` / `_received` | gauge | SWIM datagrams since start |
//! | `meshwire_relay_client_reservations` | gauge | reservations we hold on relays |
//! | `meshwire_uptime_seconds` | gauge | seconds since start |

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::status::Status;

type Labels = Vec<(String, String)>;

/// The registry and the CLI's gauges.
pub struct Metrics {
    registry: Registry,
    peers: Gauge,
    connections: Family<Labels, Gauge>,
    rtt_mean: Gauge<f64, AtomicU64>,
    kad_routing: Gauge,
    kad_records: Gauge,
    kad_provider_keys: Gauge,
    swim_members: Family<Labels, Gauge>,
    swim_sent: Gauge,
    swim_received: Gauge,
    reservations: Gauge,
    uptime: Gauge,
}

impl Metrics {
    /// Adds the CLI's gauges to `registry` (which holds the crates' metrics).
    pub fn new(mut registry: Registry) -> Self {
        let m = Metrics {
            registry: Registry::default(),
            peers: Gauge::default(),
            connections: Family::default(),
            rtt_mean: Gauge::default(),
            kad_routing: Gauge::default(),
            kad_records: Gauge::default(),
            kad_provider_keys: Gauge::default(),
            swim_members: Family::default(),
            swim_sent: Gauge::default(),
            swim_received: Gauge::default(),
            reservations: Gauge::default(),
            uptime: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("meshwire");
        r.register("peers", "Connected peers", m.peers.clone());
        r.register(
            "connections",
            "Connections by kind (direct, relayed)",
            m.connections.clone(),
        );
        r.register(
            "ping_rtt_seconds_mean",
            "Mean of the peers' last ping RTTs",
            m.rtt_mean.clone(),
        );
        r.register(
            "kad_routing_table_peers",
            "Peers in the kademlia routing table",
            m.kad_routing.clone(),
        );
        r.register(
            "kad_records",
            "Records in the kademlia store",
            m.kad_records.clone(),
        );
        r.register(
            "kad_provider_keys",
            "Keys with provider records in the kademlia store",
            m.kad_provider_keys.clone(),
        );
        r.register(
            "swim_members",
            "SWIM members by realm and state",
            m.swim_members.clone(),
        );
        r.register(
            "swim_datagrams_sent",
            "SWIM datagrams sent since start",
            m.swim_sent.clone(),
        );
        r.register(
            "swim_datagrams_received",
            "SWIM datagrams received since start",
            m.swim_received.clone(),
        );
        r.register(
            "relay_client_reservations",
            "Reservations held on relays",
            m.reservations.clone(),
        );
        r.register(
            "uptime_seconds",
            "Seconds since the node started",
            m.uptime.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Sets the gauges from `s`.
    pub fn update(&self, s: &Status) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.peers.set(n(s.peers.len()));
        let conns = s.peers.iter().flat_map(|p| &p.connections);
        let relayed = conns.clone().filter(|c| c.relayed).count();
        let total = conns.count();
        self.connections
            .get_or_create(&vec![("kind".into(), "direct".into())])
            .set(n(total - relayed));
        self.connections
            .get_or_create(&vec![("kind".into(), "relayed".into())])
            .set(n(relayed));
        let rtts: Vec<f64> = s.peers.iter().filter_map(|p| p.rtt_ms).collect();
        self.rtt_mean.set(if rtts.is_empty() {
            0.0
        } else {
            rtts.iter().sum::<f64>() / rtts.len() as f64 / 1e3
        });
        self.kad_routing.set(n(s.kad_routing_table));
        self.kad_records.set(n(s.kad_records));
        self.kad_provider_keys.set(n(s.kad_provider_keys));
        for realm in &s.realms {
            for state in ["alive", "suspect", "failed", "left"] {
                let count = realm.members.iter().filter(|m| m.state == state).count();
                self.swim_members
                    .get_or_create(&vec![
                        ("realm".into(), realm.realm.clone()),
                        ("state".into(), state.into()),
                    ])
                    .set(n(count));
            }
        }
        self.swim_sent
            .set(i64::try_from(s.swim_datagrams.0).unwrap_or(i64::MAX));
        self.swim_received
            .set(i64::try_from(s.swim_datagrams.1).unwrap_or(i64::MAX));
        self.reservations.set(n(s.relay_reservations.len()));
        self.uptime
            .set(i64::try_from(s.uptime_secs).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
