//! Prometheus metrics of a [`ResourceManager`](crate::ResourceManager).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::scope::{Resource, ScopeKind, Usage};

/// The resource manager's metrics, registered under the `rcmgr` prefix:
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `rcmgr_connections{direction}` | gauge | connections held in the system scope |
/// | `rcmgr_streams{direction}` | gauge | streams held in the system scope |
/// | `rcmgr_memory_bytes` | gauge | memory reserved in the system scope |
/// | `rcmgr_refused_total{scope,resource}` | counter | requests refused, by the scope that refused and what it ran out of |
///
/// Clones share the same values. Hand one to
/// [`ResourceManager::with_metrics`](crate::ResourceManager::with_metrics).
#[derive(Clone, Debug, Default)]
pub struct RcmgrMetrics {
    connections: Family<Vec<(String, String)>, Gauge>,
    streams: Family<Vec<(String, String)>, Gauge>,
    memory: Gauge,
    refused: Family<Vec<(String, String)>, Counter>,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl RcmgrMetrics {
    /// Creates the metrics and registers them in `registry` under the `rcmgr` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = RcmgrMetrics::default();
        let sub = registry.sub_registry_with_prefix("rcmgr");
        sub.register(
            "connections",
            "Connections held in the system scope",
            m.connections.clone(),
        );
        sub.register(
            "streams",
            "Streams held in the system scope",
            m.streams.clone(),
        );
        sub.register(
            "memory_bytes",
            "Memory reserved in the system scope",
            m.memory.clone(),
        );
        sub.register(
            "refused",
            "Requests refused by the resource manager",
            m.refused.clone(),
        );
        m
    }

    pub(crate) fn refused(&self, scope: ScopeKind, resource: Resource) {
        self.refused
            .get_or_create(&labels(&[
                ("scope", scope.as_str()),
                ("resource", resource.as_str()),
            ]))
            .inc();
    }

    pub(crate) fn set_system(&self, usage: &Usage) {
        let set = |family: &Family<Vec<(String, String)>, Gauge>, dir: &str, v: u32| {
            family
                .get_or_create(&labels(&[("direction", dir)]))
                .set(i64::from(v));
        };
        set(&self.connections, "inbound", usage.conns_inbound);
        set(&self.connections, "outbound", usage.conns_outbound);
        set(&self.streams, "inbound", usage.streams_inbound);
        set(&self.streams, "outbound", usage.streams_outbound);
        self.memory
            .set(i64::try_from(usage.memory).unwrap_or(i64::MAX));
    }

    /// Requests refused by `scope` for lack of `resource` so far.
    pub fn refused_count(&self, scope: ScopeKind, resource: Resource) -> u64 {
        self.refused
            .get_or_create(&labels(&[
                ("scope", scope.as_str()),
                ("resource", resource.as_str()),
            ]))
            .get()
    }

    /// Requests refused so far, over every scope and resource.
    pub fn refused_total(&self) -> u64 {
        const SCOPES: [ScopeKind; 9] = [
            ScopeKind::System,
            ScopeKind::Transient,
            ScopeKind::TransientPeer,
            ScopeKind::Peer,
            ScopeKind::Protocol,
            ScopeKind::ProtocolPeer,
            ScopeKind::Service,
            ScopeKind::Connection,
            ScopeKind::Stream,
        ];
        const RESOURCES: [Resource; 7] = [
            Resource::InboundConnections,
            Resource::OutboundConnections,
            Resource::Connections,
            Resource::InboundStreams,
            Resource::OutboundStreams,
            Resource::Streams,
            Resource::Memory,
        ];
        SCOPES
            .iter()
            .flat_map(|s| RESOURCES.iter().map(move |r| (*s, *r)))
            .map(|(s, r)| self.refused_count(s, r))
            .sum()
    }
}
