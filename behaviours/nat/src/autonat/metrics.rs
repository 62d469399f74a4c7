//! Prometheus metrics of AutoNAT v2.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Label set: `(name, value)` pairs.
type Labels = Vec<(String, String)>;

/// AutoNAT v2 metrics, registered under the `autonat` prefix:
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `autonat_probes_total{result}` | counter | probes ended (client); `result` = `reachable`, `unreachable`, `error` |
/// | `autonat_dial_data_sent_bytes_total` | counter | dial data sent to servers (client) |
/// | `autonat_requests_total{result}` | counter | requests ended (server); `result` = `ok`, `dial_error`, `dial_back_error`, `refused`, `rejected`, `error` |
/// | `autonat_dial_data_received_bytes_total` | counter | dial data received from clients (server) |
///
/// Clones share the same values; hand one to [`Client::with_metrics`](super::Client::with_metrics)
/// and [`Server::with_metrics`](super::Server::with_metrics).
#[derive(Clone, Debug, Default)]
pub struct AutonatMetrics {
    pub(crate) probes: Family<Labels, Counter>,
    pub(crate) data_sent: Counter,
    pub(crate) requests: Family<Labels, Counter>,
    pub(crate) data_received: Counter,
}

impl AutonatMetrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = AutonatMetrics::default();
        let sub = registry.sub_registry_with_prefix("autonat");
        sub.register(
            "probes",
            "AutoNAT v2 probes ended, by result",
            m.probes.clone(),
        );
        sub.register(
            "dial_data_sent_bytes",
            "AutoNAT v2 dial data sent to servers",
            m.data_sent.clone(),
        );
        sub.register(
            "requests",
            "AutoNAT v2 requests served, by result",
            m.requests.clone(),
        );
        sub.register(
            "dial_data_received_bytes",
            "AutoNAT v2 dial data received from clients",
            m.data_received.clone(),
        );
        m
    }

    /// Probes ended with `result` so far (`reachable`, `unreachable`, `error`).
    pub fn probes_total(&self, result: &str) -> u64 {
        self.probes
            .get_or_create(&vec![("result".into(), result.into())])
            .get()
    }

    /// Requests ended with `result` so far (`ok`, `dial_error`, `dial_back_error`,
    /// `refused`, `rejected`, `error`).
    pub fn requests_total(&self, result: &str) -> u64 {
        self.requests
            .get_or_create(&vec![("result".into(), result.into())])
            .get()
    }

    /// Dial data sent so far, in bytes.
    pub fn dial_data_sent(&self) -> u64 {
        self.data_sent.get()
    }

    /// Dial data received so far, in bytes.
    pub fn dial_data_received(&self) -> u64 {
        self.data_received.get()
    }

    pub(crate) fn probe(&self, result: &str, bytes_sent: u64) {
        self.probes
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
        self.data_sent.inc_by(bytes_sent);
    }

    pub(crate) fn request(&self, result: &str, data_received: u64) {
        self.requests
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
        self.data_received.inc_by(data_received);
    }
}
