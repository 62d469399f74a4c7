//! Prometheus metrics of a [`BasicConnMgr`](crate::BasicConnMgr).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The connection manager's metrics, registered under the `connmgr` prefix:
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `connmgr_connections` | gauge | connections tracked (opened and not yet closed or trimmed) |
/// | `connmgr_peers` | gauge | peers with at least one tracked connection |
/// | `connmgr_protected_peers` | gauge | peers protected under at least one tag |
/// | `connmgr_trims_total` | counter | trim passes run (explicit and automatic) |
/// | `connmgr_connections_trimmed_total` | counter | connections selected for closing by trims (the flood rule's included) |
/// | `connmgr_connections_flood_trimmed_total` | counter | connections selected for closing by the flood rule ([`Config::flood_headroom`](crate::Config::flood_headroom)) |
///
/// Clones share the same underlying values. Hand one to
/// [`BasicConnMgr::with_metrics`](crate::BasicConnMgr::with_metrics).
#[derive(Clone, Debug, Default)]
pub struct ConnMgrMetrics {
    pub(crate) connections: Gauge,
    pub(crate) peers: Gauge,
    pub(crate) protected_peers: Gauge,
    pub(crate) trims: Counter,
    pub(crate) connections_trimmed: Counter,
    pub(crate) connections_flood_trimmed: Counter,
}

impl ConnMgrMetrics {
    /// Creates the metrics and registers them in `registry` under the `connmgr` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ConnMgrMetrics::default();
        let sub = registry.sub_registry_with_prefix("connmgr");
        sub.register(
            "connections",
            "Connections tracked by the connection manager",
            m.connections.clone(),
        );
        sub.register(
            "peers",
            "Peers with at least one tracked connection",
            m.peers.clone(),
        );
        sub.register(
            "protected_peers",
            "Peers protected under at least one tag",
            m.protected_peers.clone(),
        );
        sub.register(
            "trims",
            "Trim passes run by the connection manager",
            m.trims.clone(),
        );
        sub.register(
            "connections_trimmed",
            "Connections selected for closing by the connection manager",
            m.connections_trimmed.clone(),
        );
        sub.register(
            "connections_flood_trimmed",
            "Connections selected for closing by the flood rule",
            m.connections_flood_trimmed.clone(),
        );
        m
    }

    /// Current value of the `connections` gauge.
    pub fn connections(&self) -> i64 {
        self.connections.get()
    }

    /// Current value of the `peers` gauge.
    pub fn peers(&self) -> i64 {
        self.peers.get()
    }

    /// Current value of the `protected_peers` gauge.
    pub fn protected_peers(&self) -> i64 {
        self.protected_peers.get()
    }

    /// Current value of the `trims` counter.
    pub fn trims(&self) -> u64 {
        self.trims.get()
    }

    /// Current value of the `connections_trimmed` counter.
    pub fn connections_trimmed(&self) -> u64 {
        self.connections_trimmed.get()
    }

    /// Current value of the `connections_flood_trimmed` counter.
    pub fn connections_flood_trimmed(&self) -> u64 {
        self.connections_flood_trimmed.get()
    }
}
