//! Prometheus metrics of a relay server ([`RelayServerEngine`](crate::RelayServerEngine)).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set: `(name, value)` pairs.
type Labels = Vec<(String, String)>;

/// A relay server's metrics, registered under the `relay` prefix:
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `relay_reservations` | gauge | reservations held |
/// | `relay_reservations_accepted_total{kind}` | counter | reservations accepted; `kind` = `new` or `renewal` |
/// | `relay_reservations_refused_total{reason}` | counter | reservations refused; `reason` = [`Refusal::as_str`](crate::server::Refusal::as_str) |
/// | `relay_reservations_ended_total{reason}` | counter | reservations ended; `reason` = `timed_out` or `connection_closed` |
/// | `relay_circuits` | gauge | circuits being set up or relaying |
/// | `relay_circuits_opened_total` | counter | circuits that started relaying |
/// | `relay_circuits_refused_total{reason}` | counter | circuits refused, by the relay or by the destination (`reason` = [`Refusal::as_str`](crate::server::Refusal::as_str)) |
/// | `relay_circuits_closed_total{reason}` | counter | circuits that relayed and ended; `reason` = [`CircuitEndReason::as_str`](crate::circuit::CircuitEndReason::as_str) |
/// | `relay_bytes_relayed_total` | counter | bytes relayed, both directions |
///
/// Clones share the same values. Hand one to
/// [`RelayServerEngine::with_metrics`](crate::RelayServerEngine::with_metrics).
#[derive(Clone, Debug, Default)]
pub struct RelayMetrics {
    pub(crate) reservations: Gauge,
    pub(crate) reservations_accepted: Family<Labels, Counter>,
    pub(crate) reservations_refused: Family<Labels, Counter>,
    pub(crate) reservations_ended: Family<Labels, Counter>,
    pub(crate) circuits: Gauge,
    pub(crate) circuits_opened: Counter,
    pub(crate) circuits_refused: Family<Labels, Counter>,
    pub(crate) circuits_closed: Family<Labels, Counter>,
    pub(crate) bytes_relayed: Counter,
}

/// A one-label set.
fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

impl RelayMetrics {
    /// Creates the metrics and registers them in `registry` under the `relay` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = RelayMetrics::default();
        let sub = registry.sub_registry_with_prefix("relay");
        sub.register("reservations", "Reservations held", m.reservations.clone());
        sub.register(
            "reservations_accepted",
            "Reservations accepted, new or renewed",
            m.reservations_accepted.clone(),
        );
        sub.register(
            "reservations_refused",
            "Reservations refused, by reason",
            m.reservations_refused.clone(),
        );
        sub.register(
            "reservations_ended",
            "Reservations ended, by reason",
            m.reservations_ended.clone(),
        );
        sub.register(
            "circuits",
            "Circuits being set up or relaying",
            m.circuits.clone(),
        );
        sub.register(
            "circuits_opened",
            "Circuits that started relaying",
            m.circuits_opened.clone(),
        );
        sub.register(
            "circuits_refused",
            "Circuits refused, by reason",
            m.circuits_refused.clone(),
        );
        sub.register(
            "circuits_closed",
            "Circuits that relayed and ended, by reason",
            m.circuits_closed.clone(),
        );
        sub.register(
            "bytes_relayed",
            "Bytes relayed through circuits, both directions",
            m.bytes_relayed.clone(),
        );
        m
    }

    pub(crate) fn reservation_accepted(&self, renewed: bool) {
        let kind = if renewed { "renewal" } else { "new" };
        self.reservations_accepted
            .get_or_create(&label("kind", kind))
            .inc();
    }

    pub(crate) fn reservation_refused(&self, reason: &str) {
        self.reservations_refused
            .get_or_create(&label("reason", reason))
            .inc();
    }

    pub(crate) fn reservation_ended(&self, reason: &str) {
        self.reservations_ended
            .get_or_create(&label("reason", reason))
            .inc();
    }

    pub(crate) fn circuit_refused(&self, reason: &str) {
        self.circuits_refused
            .get_or_create(&label("reason", reason))
            .inc();
    }

    pub(crate) fn circuit_closed(&self, reason: &str, bytes: u64) {
        self.circuits_closed
            .get_or_create(&label("reason", reason))
            .inc();
        self.bytes_relayed.inc_by(bytes);
    }

    /// Current value of the `reservations` gauge.
    pub fn reservations(&self) -> i64 {
        self.reservations.get()
    }

    /// Current value of the `circuits` gauge.
    pub fn circuits(&self) -> i64 {
        self.circuits.get()
    }

    /// Current value of the `circuits_opened` counter.
    pub fn circuits_opened(&self) -> u64 {
        self.circuits_opened.get()
    }

    /// Current value of the `bytes_relayed` counter.
    pub fn bytes_relayed(&self) -> u64 {
        self.bytes_relayed.get()
    }

    /// Current value of `reservations_refused{reason}`.
    pub fn reservations_refused(&self, reason: &str) -> u64 {
        self.reservations_refused
            .get_or_create(&label("reason", reason))
            .get()
    }

    /// Current value of `circuits_refused{reason}`.
    pub fn circuits_refused(&self, reason: &str) -> u64 {
        self.circuits_refused
            .get_or_create(&label("reason", reason))
            .get()
    }

    /// Current value of `circuits_closed{reason}`.
    pub fn circuits_closed(&self, reason: &str) -> u64 {
        self.circuits_closed
            .get_or_create(&label("reason", reason))
            .get()
    }
}
