//! Prometheus metrics of hole punching.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::{HolepunchEvent, Role};

/// Label set: `(name, value)` pairs.
type Labels = Vec<(String, String)>;

fn duration_histogram() -> Histogram {
    // 5 ms .. ~40 s
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Hole punching metrics, registered under the `holepunch` prefix:
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `holepunch_attempts_total{role,outcome}` | counter | attempts ended; `outcome` = [`AttemptOutcome::label`](crate::engine::AttemptOutcome::label) |
/// | `holepunch_upgrades_total{role,result}` | counter | sessions ended; `result` = `succeeded` or `failed` |
/// | `holepunch_attempt_duration_seconds{role}` | histogram | from an attempt's start to its end |
/// | `holepunch_rtt_seconds` | histogram | round trips measured over relayed connections (initiator) |
///
/// Clones share the same values. Hand one to [`Behaviour::with_metrics`](crate::Behaviour::with_metrics).
#[derive(Clone, Debug)]
pub struct HolepunchMetrics {
    pub(crate) attempts: Family<Labels, Counter>,
    pub(crate) upgrades: Family<Labels, Counter>,
    pub(crate) attempt_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pub(crate) rtt: Histogram,
}

impl Default for HolepunchMetrics {
    fn default() -> Self {
        HolepunchMetrics {
            attempts: Family::default(),
            upgrades: Family::default(),
            attempt_duration: Family::new_with_constructor(duration_histogram),
            rtt: duration_histogram(),
        }
    }
}

impl HolepunchMetrics {
    /// Creates the metrics and registers them in `registry` under the `holepunch` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = HolepunchMetrics::default();
        let sub = registry.sub_registry_with_prefix("holepunch");
        sub.register(
            "attempts",
            "Hole punching attempts ended, by role and outcome",
            m.attempts.clone(),
        );
        sub.register(
            "upgrades",
            "Upgrades of relayed connections ended, by role and result",
            m.upgrades.clone(),
        );
        sub.register(
            "attempt_duration_seconds",
            "Duration of hole punching attempts",
            m.attempt_duration.clone(),
        );
        sub.register(
            "rtt_seconds",
            "Round trips measured over relayed connections",
            m.rtt.clone(),
        );
        m
    }

    /// Counts an engine event.
    pub(crate) fn record(&self, event: &HolepunchEvent) {
        let role = |r: &Role| ("role".to_owned(), r.as_str().to_owned());
        match event {
            HolepunchEvent::AttemptFinished {
                role: r,
                outcome,
                elapsed,
                ..
            } => {
                self.attempts
                    .get_or_create(&vec![role(r), ("outcome".into(), outcome.label().into())])
                    .inc();
                self.attempt_duration
                    .get_or_create(&vec![role(r)])
                    .observe(elapsed.as_secs_f64());
            }
            HolepunchEvent::DirectConnectionUpgradeSucceeded { role: r, .. } => {
                self.upgrades
                    .get_or_create(&vec![role(r), ("result".into(), "succeeded".into())])
                    .inc();
            }
            HolepunchEvent::DirectConnectionUpgradeFailed { role: r, .. } => {
                self.upgrades
                    .get_or_create(&vec![role(r), ("result".into(), "failed".into())])
                    .inc();
            }
        }
    }
}
