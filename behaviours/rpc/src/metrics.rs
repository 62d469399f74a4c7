//! Prometheus metrics of RPC ([`RpcMetrics`]).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label set: `(name, value)` pairs.
type Labels = Vec<(String, String)>;

/// RPC's metrics, registered under the `rpc` prefix:
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `rpc_calls_total{outcome}` | counter | calls finished; `outcome` = `ok`, `cached` or `error` |
/// | `rpc_errors_total{kind}` | counter | calls failed, by [`CallError::kind`](crate::CallError::kind) |
/// | `rpc_call_latency_seconds` | histogram | time from `call` to its result (cache hits excluded) |
/// | `rpc_failovers_total` | counter | attempts moved to another provider after a failure |
/// | `rpc_cache_hits_total` / `rpc_cache_misses_total` | counter | idempotent calls answered from / not found in the result cache |
/// | `rpc_served_total{outcome}` | counter | remote calls this node served; `outcome` = `ok` or the [`RemoteError::kind`](crate::RemoteError::kind) |
///
/// Clones share the same values.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    pub(crate) calls: Family<Labels, Counter>,
    pub(crate) errors: Family<Labels, Counter>,
    pub(crate) latency: Histogram,
    pub(crate) failovers: Counter,
    pub(crate) cache_hits: Counter,
    pub(crate) cache_misses: Counter,
    pub(crate) served: Family<Labels, Counter>,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        RpcMetrics {
            calls: Family::default(),
            errors: Family::default(),
            // 100 µs .. ~3.3 s.
            latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            failovers: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            served: Family::default(),
        }
    }
}

pub(crate) fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

impl RpcMetrics {
    /// Creates the metrics and registers them in `registry` under the `rpc` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = RpcMetrics::default();
        let sub = registry.sub_registry_with_prefix("rpc");
        sub.register("calls", "Calls finished, by outcome", m.calls.clone());
        sub.register("errors", "Calls failed, by kind", m.errors.clone());
        sub.register(
            "call_latency_seconds",
            "Time from a call to its result",
            m.latency.clone(),
        );
        sub.register(
            "failovers",
            "Attempts moved to another provider",
            m.failovers.clone(),
        );
        sub.register(
            "cache_hits",
            "Idempotent calls answered from the cache",
            m.cache_hits.clone(),
        );
        sub.register(
            "cache_misses",
            "Idempotent calls not in the cache",
            m.cache_misses.clone(),
        );
        sub.register(
            "served",
            "Remote calls served, by outcome",
            m.served.clone(),
        );
        m
    }

    pub(crate) fn observe_latency(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
    }

    /// Failovers so far.
    pub fn failovers(&self) -> u64 {
        self.failovers.get()
    }

    /// Cache hits so far.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.get()
    }

    /// Cache misses so far.
    pub fn cache_misses(&self) -> u64 {
        self.cache_misses.get()
    }

    /// Calls failed with errors of `kind` so far.
    pub fn errors(&self, kind: &str) -> u64 {
        self.errors.get_or_create(&label("kind", kind)).get()
    }

    /// Calls finished with `outcome` (`ok`, `cached`, `error`) so far.
    pub fn calls(&self, outcome: &str) -> u64 {
        self.calls.get_or_create(&label("outcome", outcome)).get()
    }

    /// Remote calls served with `outcome` so far.
    pub fn served(&self, outcome: &str) -> u64 {
        self.served.get_or_create(&label("outcome", outcome)).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_registered_under_the_rpc_prefix() {
        let mut registry = Registry::default();
        let m = RpcMetrics::register(&mut registry);
        m.failovers.inc();
        m.cache_hits.inc();
        m.errors.get_or_create(&label("kind", "timeout")).inc();
        m.observe_latency(Duration::from_millis(3));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "rpc_failovers_total 1",
            "rpc_cache_hits_total 1",
            "rpc_errors_total{kind=\"timeout\"} 1",
            "rpc_call_latency_seconds_count 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
