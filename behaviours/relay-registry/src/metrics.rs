//! Prometheus metrics of the relay registry ([`RegistryEngine`](crate::RegistryEngine)).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set: `(name, value)` pairs.
type Labels = Vec<(String, String)>;

/// The registry's metrics, registered under the `relay_registry` prefix:
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `relay_registry_known_relays` | gauge | live relays in the local index |
/// | `relay_registry_selections_total{by}` | counter | relays chosen; `by` = `find` (a `find_relay` call returning relays) or `auto` (auto relay reserving on one) |
/// | `relay_registry_failovers_total` | counter | lost reservations replaced by auto relay |
/// | `relay_registry_failover_seconds` | histogram | time from a lost reservation to its replacement |
/// | `relay_registry_reservations` | gauge | reservations auto relay holds |
/// | `relay_registry_records_total{outcome}` | counter | records read; `outcome` = `added`, `updated`, `withdrawn`, `stale`, or the refusal: `invalid`, `wrong_realm`, `expired`, `from_future`, `ttl_too_long`, `index_full` |
/// | `relay_registry_records_published_total` | counter | records this relay published (refreshes) |
///
/// Clones share the same values. Hand one to
/// [`RegistryEngine::with_metrics`](crate::RegistryEngine::with_metrics).
#[derive(Clone, Debug)]
pub struct RegistryMetrics {
    pub(crate) known_relays: Gauge,
    pub(crate) selections: Family<Labels, Counter>,
    pub(crate) failovers: Counter,
    pub(crate) failover_seconds: Histogram,
    pub(crate) reservations: Gauge,
    pub(crate) records: Family<Labels, Counter>,
    pub(crate) published: Counter,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        RegistryMetrics {
            known_relays: Gauge::default(),
            selections: Family::default(),
            failovers: Counter::default(),
            // 10 ms .. ~82 s.
            failover_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 14),
            ),
            reservations: Gauge::default(),
            records: Family::default(),
            published: Counter::default(),
        }
    }
}

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

impl RegistryMetrics {
    /// Creates the metrics and registers them in `registry` under the `relay_registry`
    /// prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = RegistryMetrics::default();
        let sub = registry.sub_registry_with_prefix("relay_registry");
        sub.register(
            "known_relays",
            "Live relays in the local index",
            m.known_relays.clone(),
        );
        sub.register("selections", "Relays chosen, by whom", m.selections.clone());
        sub.register(
            "failovers",
            "Lost reservations replaced by auto relay",
            m.failovers.clone(),
        );
        sub.register(
            "failover_seconds",
            "Time from a lost reservation to its replacement",
            m.failover_seconds.clone(),
        );
        sub.register(
            "reservations",
            "Reservations auto relay holds",
            m.reservations.clone(),
        );
        sub.register(
            "records",
            "Relay records read, by outcome",
            m.records.clone(),
        );
        sub.register(
            "records_published",
            "Records this relay published",
            m.published.clone(),
        );
        m
    }

    /// Live relays in the index.
    pub fn known_relays(&self) -> i64 {
        self.known_relays.get()
    }

    /// Relays chosen by `by` (`find` or `auto`).
    pub fn selections(&self, by: &str) -> u64 {
        self.selections.get_or_create(&label("by", by)).get()
    }

    /// Failovers done.
    pub fn failovers(&self) -> u64 {
        self.failovers.get()
    }

    /// Reservations auto relay holds.
    pub fn reservations(&self) -> i64 {
        self.reservations.get()
    }

    /// Records read with `outcome` (see the table).
    pub fn records(&self, outcome: &str) -> u64 {
        self.records.get_or_create(&label("outcome", outcome)).get()
    }

    /// Records published.
    pub fn published(&self) -> u64 {
        self.published.get()
    }

    pub(crate) fn selected(&self, by: &str) {
        self.selections.get_or_create(&label("by", by)).inc();
    }

    pub(crate) fn record(&self, outcome: &str) {
        self.records.get_or_create(&label("outcome", outcome)).inc();
    }

    pub(crate) fn failed_over(&self, elapsed: Duration) {
        self.failovers.inc();
        self.failover_seconds.observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_metrics_are_exported_under_their_names() {
        let mut registry = Registry::default();
        let m = RegistryMetrics::register(&mut registry);
        m.known_relays.set(3);
        m.selected("auto");
        m.selected("find");
        m.failed_over(Duration::from_millis(120));
        m.record("invalid");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "relay_registry_known_relays 3",
            "relay_registry_selections_total{by=\"auto\"} 1",
            "relay_registry_selections_total{by=\"find\"} 1",
            "relay_registry_failovers_total 1",
            "relay_registry_failover_seconds_count 1",
            "relay_registry_records_total{outcome=\"invalid\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
