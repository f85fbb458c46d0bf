//! Prometheus metrics, all under the `gomemlimit_injector_` prefix.
//!
//! [`Metrics::new`] registers into a caller-owned [`Registry`], so each server (and each
//! test) has its own set and nothing is global.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::admission::{Endpoint, Outcome, ResizeOutcome};
use crate::engine::ContainerEvent;

/// Prefix of every metric name.
pub(crate) const PREFIX: &str = "gomemlimit_injector";

/// Content type of [`encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Review latency buckets in seconds. A review is pure CPU work of a few microseconds to a
/// few milliseconds for huge pods; the upper buckets catch slow uploads, and the API
/// server's own webhook timeout (10 s by default) lies beyond them.
const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetricsError {
    #[error("failed to encode the metrics")]
    Encode(#[source] std::fmt::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    path: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResizeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

type DurationFamily = Family<PathLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The webhook's metrics. Cheap to share: every field is an `Arc` inside.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: DurationFamily,
    containers: Family<ActionLabels, Counter>,
    resizes: Family<ResizeLabels, Counter>,
    cert_expiry: Gauge,
    tls_reloads: Family<ResultLabels, Counter>,
    policy_reloads: Family<ResultLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them under the `gomemlimit_injector` prefix in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix(PREFIX);
        let metrics = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            containers: Family::default(),
            resizes: Family::default(),
            cert_expiry: Gauge::default(),
            tls_reloads: Family::default(),
            policy_reloads: Family::default(),
        };
        metrics.register_reviews(registry);
        metrics.register_files(registry);
        registry.register(
            "build",
            "Build information",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        metrics
    }

    /// What the reviews did.
    fn register_reviews(&self, registry: &mut Registry) {
        let metrics = self;
        registry.register(
            "admission_requests",
            "AdmissionReview requests by path and outcome",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "admission_duration",
            "Time to read and answer an AdmissionReview",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "containers",
            "Container actions taken, or reported by audit, by action",
            metrics.containers.clone(),
        );
        registry.register(
            "resize_reviews",
            "In-place resizes reviewed, by outcome (allowed, warned, denied)",
            metrics.resizes.clone(),
        );
    }

    /// The serving certificate and the reloads of the files.
    fn register_files(&self, registry: &mut Registry) {
        let metrics = self;
        registry.register_with_unit(
            "tls_certificate_expiry_timestamp",
            "NotAfter of the serving certificate, as a Unix timestamp",
            Unit::Seconds,
            metrics.cert_expiry.clone(),
        );
        registry.register(
            "tls_reloads",
            "Serving certificate reloads by result (success, failure)",
            metrics.tls_reloads.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy file reloads by result (success, failure)",
            metrics.policy_reloads.clone(),
        );
    }

    /// Records one answered review, with the events of its containers. Every 4xx reply
    /// (including 413 and 408) has the outcome [`Outcome::Error`].
    pub(crate) fn record_review(
        &self,
        endpoint: Endpoint,
        outcome: Outcome,
        duration: Duration,
        events: &[ContainerEvent],
    ) {
        let path = endpoint.as_str();
        let outcome = outcome.as_str();
        self.requests
            .get_or_create(&RequestLabels { path, outcome })
            .inc();
        self.duration
            .get_or_create(&PathLabels { path })
            .observe(duration.as_secs_f64());
        for event in events {
            let action = event.label();
            self.containers
                .get_or_create(&ActionLabels { action })
                .inc();
        }
    }

    /// Counts an in-place resize review.
    pub(crate) fn record_resize(&self, outcome: ResizeOutcome) {
        let outcome = outcome.as_str();
        self.resizes.get_or_create(&ResizeLabels { outcome }).inc();
    }

    /// Sets the serving certificate's NotAfter (Unix seconds).
    pub(crate) fn set_certificate_expiry(&self, not_after_unix: i64) {
        self.cert_expiry.set(not_after_unix);
    }

    /// Counts a certificate reload attempt.
    pub(crate) fn tls_reload(&self, success: bool) {
        self.tls_reloads
            .get_or_create(&ResultLabels {
                result: result_label(success),
            })
            .inc();
    }

    /// Counts a policy reload attempt.
    pub(crate) fn policy_reload(&self, success: bool) {
        self.policy_reloads
            .get_or_create(&ResultLabels {
                result: result_label(success),
            })
            .inc();
    }
}

fn result_label(success: bool) -> &'static str {
    if success { "success" } else { "failure" }
}

/// Encodes `registry` in the OpenMetrics text format (see [`CONTENT_TYPE`]).
pub(crate) fn encode(registry: &Registry) -> Result<String, MetricsError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).map_err(MetricsError::Encode)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_units() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.record_review(
            Endpoint::Mutate,
            Outcome::Mutated,
            Duration::from_micros(300),
            &[ContainerEvent::SetRequest, ContainerEvent::InjectGomemlimit],
        );
        metrics.set_certificate_expiry(1_900_000_000);
        metrics.tls_reload(false);
        metrics.policy_reload(true);
        let text = encode(&registry).unwrap();
        for line in [
            r#"gomemlimit_injector_admission_requests_total{path="mutate",outcome="mutated"} 1"#,
            r#"gomemlimit_injector_admission_duration_seconds_count{path="mutate"} 1"#,
            r#"gomemlimit_injector_containers_total{action="set_request"} 1"#,
            "gomemlimit_injector_tls_certificate_expiry_timestamp_seconds 1900000000",
            r#"gomemlimit_injector_tls_reloads_total{result="failure"} 1"#,
            r#"gomemlimit_injector_policy_reloads_total{result="success"} 1"#,
            r#"gomemlimit_injector_build_info{version=""#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn sub_millisecond_reviews_land_in_their_own_bucket() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.record_review(
            Endpoint::Audit,
            Outcome::Audited,
            Duration::from_micros(80),
            &[],
        );
        let text = encode(&registry).unwrap();
        assert!(
            text.contains(
                r#"gomemlimit_injector_admission_duration_seconds_bucket{le="0.0001",path="audit"} 1"#
            ),
            "{text}"
        );
    }
}
