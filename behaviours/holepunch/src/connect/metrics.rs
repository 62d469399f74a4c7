//! Prometheus metrics of the [`Connector`](crate::Connector).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::behaviour::ConnectOutcome;

type Labels = Vec<(String, String)>;

fn duration_histogram() -> Histogram {
    // 5 ms .. ~40 s
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Connector metrics, registered under the `holepunch_connector` prefix:
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `holepunch_connector_sessions_total{method,result}` | counter | sessions ended; `method` = [`Method::label`](crate::connect::Method::label), `result` = `direct`, `failed` or `skipped` |
/// | `holepunch_connector_time_to_direct_seconds{method}` | histogram | from the relayed connection to the direct one |
/// | `holepunch_connector_spray_sockets_total` | counter | mappings opened by sprays (the sprayer's side) |
/// | `holepunch_connector_spray_probes_total` | counter | probes sent (the prober's side; a spray stopped by its success counts its budget) |
///
/// Clones share the values.
#[derive(Clone, Debug)]
pub struct ConnectorMetrics {
    sessions: Family<Labels, Counter>,
    time_to_direct: Family<Labels, Histogram, fn() -> Histogram>,
    pub(crate) spray_sockets: Counter,
    pub(crate) spray_probes: Counter,
}

impl Default for ConnectorMetrics {
    fn default() -> Self {
        ConnectorMetrics {
            sessions: Family::default(),
            time_to_direct: Family::new_with_constructor(duration_histogram),
            spray_sockets: Counter::default(),
            spray_probes: Counter::default(),
        }
    }
}

impl ConnectorMetrics {
    /// Creates the metrics and registers them in `registry` under `holepunch_connector`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ConnectorMetrics::default();
        let sub = registry.sub_registry_with_prefix("holepunch_connector");
        sub.register(
            "sessions",
            "Connector sessions ended, by method and result",
            m.sessions.clone(),
        );
        sub.register(
            "time_to_direct_seconds",
            "Time from the relayed connection to the direct one, by method",
            m.time_to_direct.clone(),
        );
        sub.register(
            "spray_sockets",
            "Mappings opened by birthday sprays",
            m.spray_sockets.clone(),
        );
        sub.register(
            "spray_probes",
            "Probes sent by birthday sprays",
            m.spray_probes.clone(),
        );
        m
    }

    /// Sessions ended with `result` for `method` so far.
    pub fn sessions(&self, method: &str, result: &str) -> u64 {
        self.sessions
            .get_or_create(&vec![
                ("method".into(), method.into()),
                ("result".into(), result.into()),
            ])
            .get()
    }

    pub(crate) fn record(&self, outcome: &ConnectOutcome) {
        let (method, result) = match outcome {
            ConnectOutcome::Direct { method, elapsed } => {
                self.time_to_direct
                    .get_or_create(&vec![("method".into(), method.label().into())])
                    .observe(elapsed.as_secs_f64());
                (method.label(), "direct")
            }
            ConnectOutcome::Failed { method, .. } => (method.label(), "failed"),
            ConnectOutcome::Skipped(_) => ("skip", "skipped"),
        };
        self.sessions
            .get_or_create(&vec![
                ("method".into(), method.into()),
                ("result".into(), result.into()),
            ])
            .inc();
    }
}
