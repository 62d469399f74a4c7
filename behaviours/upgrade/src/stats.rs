//! Upgrade statistics: [`UpgradeStats`] (a snapshot) and their Prometheus metrics.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The upper bounds of the upgrade-duration histogram, in seconds.
pub const DURATION_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// Counters of every session of a behaviour since it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpgradeStats {
    /// Upgrades started: a path opened on a direct connection for a session on a relay.
    pub attempts: u64,
    /// Upgrades that moved a session's sending to the direct path.
    pub successes: u64,
    /// Upgrades whose direct path was refused or failed before the switch.
    pub failures: u64,
    /// Sessions moved back to a relayed path because the direct one failed.
    pub fallbacks: u64,
    /// Messages sent again on a new path (unacknowledged at a switch).
    pub messages_migrated: u64,
    /// Payload bytes sent again.
    pub bytes_resent: u64,
    /// Upgrade durations (from the start of the attempt to the switch), counted per bucket of
    /// [`DURATION_BUCKETS`] (the last entry counts those above every bound).
    pub duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    /// The sum of the upgrade durations.
    pub duration_sum: Duration,
}

impl UpgradeStats {
    pub(crate) fn observe(&mut self, duration: Duration) {
        let secs = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.duration_buckets[bucket] += 1;
        self.duration_sum += duration;
    }
}

/// The behaviour's Prometheus metrics, prefixed `upgrade_` by
/// [`UpgradeMetrics::register`]:
///
/// | metric | type | what |
/// | --- | --- | --- |
/// | `upgrade_attempts_total` | counter | upgrades started |
/// | `upgrade_successes_total` | counter | upgrades that switched to the direct path |
/// | `upgrade_failures_total` | counter | direct paths refused or failed before the switch |
/// | `upgrade_fallbacks_total` | counter | sessions moved back to a relay |
/// | `upgrade_messages_migrated_total` | counter | messages sent again on a new path |
/// | `upgrade_bytes_resent_total` | counter | payload bytes sent again |
/// | `upgrade_duration_seconds` | histogram | from the start of an upgrade to the switch |
#[derive(Debug, Clone)]
pub struct UpgradeMetrics {
    pub(crate) attempts: Counter,
    pub(crate) successes: Counter,
    pub(crate) failures: Counter,
    pub(crate) fallbacks: Counter,
    pub(crate) messages_migrated: Counter,
    pub(crate) bytes_resent: Counter,
    pub(crate) duration: Histogram,
}

impl Default for UpgradeMetrics {
    fn default() -> Self {
        UpgradeMetrics {
            attempts: Counter::default(),
            successes: Counter::default(),
            failures: Counter::default(),
            fallbacks: Counter::default(),
            messages_migrated: Counter::default(),
            bytes_resent: Counter::default(),
            duration: Histogram::new(DURATION_BUCKETS),
        }
    }
}

impl UpgradeMetrics {
    /// Registers the metrics under the prefix `upgrade`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("upgrade");
        r.register("attempts", "Upgrades started", self.attempts.clone());
        r.register(
            "successes",
            "Upgrades that switched to the direct path",
            self.successes.clone(),
        );
        r.register(
            "failures",
            "Direct paths refused or failed before the switch",
            self.failures.clone(),
        );
        r.register(
            "fallbacks",
            "Sessions moved back to a relay",
            self.fallbacks.clone(),
        );
        r.register(
            "messages_migrated",
            "Messages sent again on a new path",
            self.messages_migrated.clone(),
        );
        r.register(
            "bytes_resent",
            "Payload bytes sent again",
            self.bytes_resent.clone(),
        );
        r.register(
            "duration_seconds",
            "From the start of an upgrade to the switch",
            self.duration.clone(),
        );
    }
}
