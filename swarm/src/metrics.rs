//! Prometheus metrics of a [`Swarm`](crate::Swarm).

use meshwire_rcmgr::RcmgrMetrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The swarm's metrics, registered under the `swarm` prefix by
/// [`Swarm::register_metrics`](crate::Swarm::register_metrics):
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `swarm_connections` | gauge | established connections |
/// | `swarm_connections_incoming_total` | counter | inbound connections established |
/// | `swarm_connections_outgoing_total` | counter | outbound connections established |
/// | `swarm_connections_closed_total` | counter | connections closed, for any cause |
/// | `swarm_connections_trimmed_total` | counter | connections closed by the connection manager |
/// | `swarm_connections_idle_closed_total` | counter | connections closed by the idle rule |
/// | `swarm_dial_failures_total` | counter | dials that failed |
/// | `swarm_incoming_connection_errors_total` | counter | inbound connections that failed or were refused |
/// | `swarm_inbound_streams_total` | counter | inbound streams negotiated and handed to a behaviour |
/// | `swarm_inbound_stream_errors_total` | counter | inbound streams refused (unknown protocol, limit, timeout) |
/// | `swarm_outbound_streams_total` | counter | outbound streams handed to a behaviour |
/// | `swarm_outbound_stream_failures_total` | counter | outbound stream requests that failed |
///
/// The resource manager's `rcmgr_*` metrics are registered with them (see
/// [`RcmgrMetrics`]).
#[derive(Clone, Debug, Default)]
pub struct SwarmMetrics {
    /// `swarm_connections`.
    pub connections: Gauge,
    /// `swarm_connections_incoming_total`.
    pub connections_incoming: Counter,
    /// `swarm_connections_outgoing_total`.
    pub connections_outgoing: Counter,
    /// `swarm_connections_closed_total`.
    pub connections_closed: Counter,
    /// `swarm_connections_trimmed_total`.
    pub connections_trimmed: Counter,
    /// `swarm_connections_idle_closed_total`.
    pub connections_idle_closed: Counter,
    /// `swarm_dial_failures_total`.
    pub dial_failures: Counter,
    /// `swarm_incoming_connection_errors_total`.
    pub incoming_connection_errors: Counter,
    /// `swarm_inbound_streams_total`.
    pub inbound_streams: Counter,
    /// `swarm_inbound_stream_errors_total`.
    pub inbound_stream_errors: Counter,
    /// `swarm_outbound_streams_total`.
    pub outbound_streams: Counter,
    /// `swarm_outbound_stream_failures_total`.
    pub outbound_stream_failures: Counter,
    /// The resource manager's metrics (`rcmgr_*`, see [`RcmgrMetrics`]), registered with
    /// these.
    pub resources: RcmgrMetrics,
}

impl SwarmMetrics {
    /// Creates the metrics and registers them in `registry` under the `swarm` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = SwarmMetrics {
            resources: RcmgrMetrics::register(registry),
            ..SwarmMetrics::default()
        };
        let r = registry.sub_registry_with_prefix("swarm");
        r.register(
            "connections",
            "Established connections",
            m.connections.clone(),
        );
        r.register(
            "connections_incoming",
            "Inbound connections established",
            m.connections_incoming.clone(),
        );
        r.register(
            "connections_outgoing",
            "Outbound connections established",
            m.connections_outgoing.clone(),
        );
        r.register(
            "connections_closed",
            "Connections closed, for any cause",
            m.connections_closed.clone(),
        );
        r.register(
            "connections_trimmed",
            "Connections closed by the connection manager",
            m.connections_trimmed.clone(),
        );
        r.register(
            "connections_idle_closed",
            "Connections closed by the idle rule",
            m.connections_idle_closed.clone(),
        );
        r.register(
            "dial_failures",
            "Dials that failed",
            m.dial_failures.clone(),
        );
        r.register(
            "incoming_connection_errors",
            "Inbound connections that failed or were refused",
            m.incoming_connection_errors.clone(),
        );
        r.register(
            "inbound_streams",
            "Inbound streams negotiated and handed to a behaviour",
            m.inbound_streams.clone(),
        );
        r.register(
            "inbound_stream_errors",
            "Inbound streams refused",
            m.inbound_stream_errors.clone(),
        );
        r.register(
            "outbound_streams",
            "Outbound streams handed to a behaviour",
            m.outbound_streams.clone(),
        );
        r.register(
            "outbound_stream_failures",
            "Outbound stream requests that failed",
            m.outbound_stream_failures.clone(),
        );
        m
    }
}
