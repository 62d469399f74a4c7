//! Prometheus metrics of the probe protocol.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::wire::{DialBackFrom, DialBackStatus, Request, Response};

/// Label set: `(name, value)` pairs.
type Labels = Vec<(String, String)>;

/// NAT probe metrics, registered under the `natprobe` prefix:
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `natprobe_requests_total{request,result}` | counter | requests served (server); `request` = `observe`, `dial_back_other_port`, `dial_back_other_address`, `invalid`; `result` = `observed`, `reached`, `not_reached`, `unavailable`, `refused`, `error` |
/// | `natprobe_dropped_total{reason}` | counter | streams dropped unread (server); `reason` = `rate_limit`, `busy`, `no_address` |
/// | `natprobe_detections_total{result}` | counter | detection rounds ended (detector); `result` = `detected`, `failed` |
///
/// Clones share the same values; hand one to [`NatProbeServer::with_metrics`](crate::NatProbeServer::with_metrics)
/// and [`NatDetector::with_metrics`](crate::NatDetector::with_metrics).
#[derive(Clone, Debug, Default)]
pub struct NatProbeMetrics {
    pub(crate) requests: Family<Labels, Counter>,
    pub(crate) dropped: Family<Labels, Counter>,
    pub(crate) detections: Family<Labels, Counter>,
}

impl NatProbeMetrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = NatProbeMetrics::default();
        let sub = registry.sub_registry_with_prefix("natprobe");
        sub.register(
            "requests",
            "NAT probe requests served, by request and result",
            m.requests.clone(),
        );
        sub.register(
            "dropped",
            "NAT probe streams dropped unread, by reason",
            m.dropped.clone(),
        );
        sub.register(
            "detections",
            "NAT detection rounds ended, by result",
            m.detections.clone(),
        );
        m
    }

    pub(crate) fn served(&self, outcome: Result<&(Request, Response), ()>) {
        let (request, result) = match outcome {
            Ok((req, resp)) => (
                match req {
                    Request::Observe => "observe",
                    Request::DialBack(DialBackFrom::OtherPort) => "dial_back_other_port",
                    Request::DialBack(DialBackFrom::OtherAddress) => "dial_back_other_address",
                },
                match resp {
                    Response::Observed(_) => "observed",
                    Response::DialBack(DialBackStatus::Reached) => "reached",
                    Response::DialBack(DialBackStatus::NotReached) => "not_reached",
                    Response::DialBack(DialBackStatus::Unavailable) => "unavailable",
                    Response::DialBack(DialBackStatus::Refused) => "refused",
                },
            ),
            Err(()) => ("invalid", "error"),
        };
        self.requests
            .get_or_create(&vec![
                ("request".into(), request.into()),
                ("result".into(), result.into()),
            ])
            .inc();
    }

    pub(crate) fn dropped(&self, reason: &str) {
        self.dropped
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    pub(crate) fn detection(&self, detected: bool) {
        let result = if detected { "detected" } else { "failed" };
        self.detections
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
    }
}
