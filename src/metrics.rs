//! Prometheus metrics (text format, served on their own plain-HTTP port). Label values are
//! bounded: components, outcomes and error kinds, never pod names.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    component: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// A cluster fact lookup at admission: `kind` (service_account, config_map) and where the
/// answer came from: `cache` (no wait), `api` (the review waited for a GET), `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub kind: &'static str,
    pub source: &'static str,
}

/// The lookup counters, shared between the metrics registry and the facts cache.
pub type LookupCounters = Family<LookupLabels, Counter>;

/// Errors worth counting, one label value each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unprocessable,
    PayloadTooLarge,
    RequestTimeout,
    TlsHandshake,
    HandshakeTimeout,
    PlainHttp,
    TooManyConnections,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unprocessable => "unprocessable",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::TlsHandshake => "tls_handshake",
            ErrorKind::HandshakeTimeout => "handshake_timeout",
            ErrorKind::PlainHttp => "plain_http",
            ErrorKind::TooManyConnections => "too_many_connections",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    duration: Histogram,
    patch_ops: Family<ComponentLabel, Counter>,
    errors: Family<KindLabel, Counter>,
    cert_expiry: Gauge<i64, AtomicI64>,
    cert_reloads: Family<ResultLabel, Counter>,
    connections: Gauge<i64, AtomicI64>,
    ready: Gauge<i64, AtomicI64>,
    audit_findings: Gauge<i64, AtomicI64>,
    audit_last_success: Gauge<i64, AtomicI64>,
    lookups: LookupCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("harbor_iam_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "AdmissionReviews answered, by Harbor component and outcome (mutated, unchanged, skipped, denied, invalid)",
            reviews.clone(),
        );
        // 50 µs .. ~0.8 s
        let duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
        registry.register_with_unit(
            "admission_review_duration",
            "Time to answer one AdmissionReview, from body received to response built",
            Unit::Seconds,
            duration.clone(),
        );
        let patch_ops = Family::<ComponentLabel, Counter>::default();
        registry.register(
            "patch_operations",
            "JSON Patch operations returned, by component",
            patch_ops.clone(),
        );
        let errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "errors",
            "Requests and connections refused, by kind",
            errors.clone(),
        );
        let cert_expiry = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "certificate_expiry_timestamp",
            "notAfter of the serving certificate, as a Unix timestamp",
            Unit::Seconds,
            cert_expiry.clone(),
        );
        let cert_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads, by result",
            cert_reloads.clone(),
        );
        let lookups = LookupCounters::default();
        registry.register(
            "cluster_lookups",
            "Cluster fact lookups at admission, by kind and source (cache: answered at once; api: the review waited for the API server; failed)",
            lookups.clone(),
        );
        let connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "open_connections",
            "TLS connections currently open",
            connections.clone(),
        );
        let ready = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "ready",
            "1 while the webhook reports ready, 0 otherwise",
            ready.clone(),
        );
        let audit_findings = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "audit_findings",
            "Harbor DB pods in opted-in namespaces not injected or still carrying a static secret, at the last audit",
            audit_findings.clone(),
        );
        let audit_last_success = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "audit_last_success_timestamp",
            "When the last background audit completed, as a Unix timestamp",
            Unit::Seconds,
            audit_last_success.clone(),
        );
        Metrics {
            registry,
            reviews,
            duration,
            patch_ops,
            errors,
            cert_expiry,
            cert_reloads,
            connections,
            ready,
            audit_findings,
            audit_last_success,
            lookups,
        }
    }

    /// The cluster lookup counters, for the facts cache to count into.
    pub fn cluster_lookups(&self) -> LookupCounters {
        self.lookups.clone()
    }

    pub fn observe_review(
        &self,
        component: &'static str,
        outcome: &'static str,
        patch_ops: usize,
        seconds: f64,
    ) {
        self.reviews
            .get_or_create(&ReviewLabels { component, outcome })
            .inc();
        self.duration.observe(seconds);
        if patch_ops > 0 {
            self.patch_ops
                .get_or_create(&ComponentLabel { component })
                .inc_by(patch_ops as u64);
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub fn certificate(&self, not_after: Option<i64>, reload: Option<bool>) {
        if let Some(t) = not_after {
            self.cert_expiry.set(t);
        }
        if let Some(ok) = reload {
            let result = if ok { "success" } else { "failure" };
            self.cert_reloads
                .get_or_create(&ResultLabel { result })
                .inc();
        }
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(ready as i64);
    }

    pub fn audit(&self, findings: usize, at_unix_seconds: i64) {
        self.audit_findings.set(findings as i64);
        self.audit_last_success.set(at_unix_seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String never fails");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.observe_review("core", "mutated", 7, 0.0004);
        m.error(ErrorKind::PayloadTooLarge);
        m.certificate(Some(1_900_000_000), Some(true));
        m.set_ready(true);
        let text = m.encode();
        for line in [
            "harbor_iam_webhook_admission_reviews_total{component=\"core\",outcome=\"mutated\"} 1",
            "harbor_iam_webhook_patch_operations_total{component=\"core\"} 7",
            "harbor_iam_webhook_errors_total{kind=\"payload_too_large\"} 1",
            "harbor_iam_webhook_certificate_expiry_timestamp_seconds 1900000000",
            "harbor_iam_webhook_certificate_reloads_total{result=\"success\"} 1",
            "harbor_iam_webhook_admission_review_duration_seconds_count 1",
            "harbor_iam_webhook_ready 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
