//! Prometheus metrics, all under the `gomemlimit_injector_` prefix.
//!
//! [`Metrics::new`] registers into a caller-owned [`Registry`], so each server (and each
//! test) has its own set and nothing is global. Every metric the webhook can export is
//! registered there, the background audit's included, so that reading the registry tells
//! all the names (the dashboard and alert checks rely on it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
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
struct NamespaceLabels {
    namespace: String,
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
    scans: Family<ResultLabels, Counter>,
    background: Arc<BackgroundAudit>,
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
            scans: Family::default(),
            background: Arc::default(),
        };
        metrics.register_reviews(registry);
        metrics.register_files(registry);
        metrics.register_operations(registry);
        metrics.initialize();
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

impl Metrics {
    /// Reloads and the background audit. The background audit's metrics are registered
    /// whether or not it runs, so that every name the webhook can export is in the
    /// registry (they have no samples while it is off).
    fn register_operations(&self, registry: &mut Registry) {
        registry.register(
            "tls_reloads",
            "Serving certificate reloads by result (success, failure)",
            self.tls_reloads.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy file reloads by result (success, failure)",
            self.policy_reloads.clone(),
        );
        registry.register(
            "background_audit_scans",
            "Background audit scans by result (success, failure)",
            self.scans.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&self.background)));
    }

    /// Creates every series whose labels are known at 0: `increase()` and `rate()` see
    /// nothing in a series that appears at 1, so an alert would miss a first failure, and
    /// a family with no series would not be exported at all.
    fn initialize(&self) {
        for path in [Endpoint::Mutate, Endpoint::Audit] {
            for outcome in [
                Outcome::Mutated,
                Outcome::Unchanged,
                Outcome::Audited,
                Outcome::Skipped,
                Outcome::Denied,
                Outcome::Error,
            ] {
                drop(self.requests.get_or_create(&RequestLabels {
                    path: path.as_str(),
                    outcome: outcome.as_str(),
                }));
            }
        }
        for path in [Endpoint::Mutate, Endpoint::Audit] {
            drop(self.duration.get_or_create(&PathLabels {
                path: path.as_str(),
            }));
        }
        for event in ContainerEvent::ALL {
            drop(self.containers.get_or_create(&ActionLabels {
                action: event.label(),
            }));
        }
        for outcome in [
            ResizeOutcome::Allowed,
            ResizeOutcome::Warned,
            ResizeOutcome::Denied,
        ] {
            let outcome = outcome.as_str();
            drop(self.resizes.get_or_create(&ResizeLabels { outcome }));
        }
        for family in [&self.tls_reloads, &self.policy_reloads, &self.scans] {
            for success in [true, false] {
                drop(family.get_or_create(&ResultLabels {
                    result: result_label(success),
                }));
            }
        }
    }

    /// Says that this replica runs the background audit every `interval`.
    pub(crate) fn background_audit_enabled(&self, interval: Duration) {
        self.background
            .update(|b| b.interval = Some(interval.as_secs_f64()));
    }

    /// Says whether this replica holds the background audit's Lease. A replica that does
    /// not drops its findings: only the scanning replica reports non-compliant pods, so
    /// that no stale count outlives a change of leader.
    pub(crate) fn set_background_leader(&self, leader: bool) {
        self.background.update(|b| {
            b.leader = Some(leader);
            if !leader {
                b.findings = None;
            }
        });
    }

    /// Publishes a completed scan, replacing the previous one's findings as a whole: a
    /// namespace without non-compliant pods has no series.
    pub(crate) fn record_scan(&self, findings: Findings, duration: Duration, completed_unix: f64) {
        self.scans
            .get_or_create(&ResultLabels { result: "success" })
            .inc();
        self.background.update(|b| {
            b.last_completed = Some(completed_unix);
            b.last_duration = Some(duration.as_secs_f64());
            b.findings = Some(findings);
        });
    }

    /// Counts a scan that failed; the last completed scan's findings stay.
    pub(crate) fn scan_failed(&self) {
        self.scans
            .get_or_create(&ResultLabels { result: "failure" })
            .inc();
    }
}

/// What one completed background scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Findings {
    /// Pods evaluated, in the selected namespaces.
    pub(crate) pods: u64,
    /// Non-compliant pods per namespace; only namespaces that have some.
    pub(crate) noncompliant: BTreeMap<String, u64>,
}

/// The background audit's state as the metrics show it, swapped as a whole so that a
/// scrape never sees half a scan.
#[derive(Debug, Default)]
struct BackgroundAudit(Mutex<BackgroundState>);

#[derive(Debug, Default, Clone)]
struct BackgroundState {
    /// Seconds between scans; `None` while the background audit is off.
    interval: Option<f64>,
    leader: Option<bool>,
    last_completed: Option<f64>,
    last_duration: Option<f64>,
    findings: Option<Findings>,
}

impl BackgroundAudit {
    fn update(&self, f: impl FnOnce(&mut BackgroundState)) {
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state);
    }
}

/// Encodes a gauge with no labels when it has a value; its HELP and TYPE always.
fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: Option<f64>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    if let Some(value) = value {
        metric.encode_gauge(&value)?;
    }
    Ok(())
}

/// `noncompliant_pods`, one series per namespace that has some.
fn encode_noncompliant(
    encoder: &mut DescriptorEncoder,
    findings: &Findings,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "noncompliant_pods",
        "Pods the webhook would change, by namespace, as the last completed background scan found them (scanning replica only)",
        None,
        MetricType::Gauge,
    )?;
    for (namespace, count) in &findings.noncompliant {
        let labels = NamespaceLabels {
            namespace: namespace.clone(),
        };
        family.encode_family(&labels)?.encode_gauge(count)?;
    }
    Ok(())
}

impl Collector for BackgroundAudit {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let findings = state.findings.unwrap_or_default();
        encode_noncompliant(&mut encoder, &findings)?;
        let scanning = state.leader == Some(true);
        let seconds = Some(&Unit::Seconds);
        let gauges = [
            (
                "background_audit_interval",
                "Time between background scans (exported while the background audit is on)",
                seconds,
                state.interval,
            ),
            (
                "background_audit_leader",
                "1 on the replica that holds the background audit lease and scans, else 0",
                None,
                state.interval.map(|_| if scanning { 1.0 } else { 0.0 }),
            ),
            (
                "background_audit_last_completed_timestamp",
                "When this replica last completed a background scan, as a Unix timestamp",
                seconds,
                state.last_completed,
            ),
            (
                "background_audit_last_duration",
                "How long this replica's last completed background scan took",
                seconds,
                state.last_duration,
            ),
            (
                "background_audit_pods",
                "Pods in the selected namespaces that the last completed background scan evaluated (scanning replica only)",
                None,
                (scanning && state.last_completed.is_some()).then_some(findings.pods as f64),
            ),
        ];
        for (name, help, unit, value) in gauges {
            encode_gauge(&mut encoder, name, help, unit, value)?;
        }
        Ok(())
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

    fn findings(pods: u64, noncompliant: &[(&str, u64)]) -> Findings {
        Findings {
            pods,
            noncompliant: noncompliant
                .iter()
                .map(|(ns, n)| ((*ns).to_owned(), *n))
                .collect(),
        }
    }

    #[test]
    fn background_audit_exports_nothing_while_off_but_its_names() {
        let mut registry = Registry::default();
        let _metrics = Metrics::new(&mut registry);
        let text = encode(&registry).unwrap();
        assert!(
            text.contains("# TYPE gomemlimit_injector_noncompliant_pods gauge"),
            "{text}"
        );
        assert!(
            !text.contains("gomemlimit_injector_noncompliant_pods{"),
            "{text}"
        );
        assert!(
            !text.contains("\ngomemlimit_injector_background_audit_interval_seconds "),
            "{text}"
        );
        // Counters that alerts watch start at 0, so that their first increase counts.
        assert!(
            text.contains(r#"gomemlimit_injector_policy_reloads_total{result="failure"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gomemlimit_injector_admission_requests_total{path="mutate",outcome="denied"} 0"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_completed_scan_is_published() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.background_audit_enabled(Duration::from_secs(300));
        metrics.set_background_leader(true);
        metrics.record_scan(
            findings(7, &[("shop", 3), ("web", 1)]),
            Duration::from_millis(250),
            1_900_000_000.5,
        );
        let text = encode(&registry).unwrap();
        for line in [
            r#"gomemlimit_injector_noncompliant_pods{namespace="shop"} 3"#,
            r#"gomemlimit_injector_noncompliant_pods{namespace="web"} 1"#,
            "gomemlimit_injector_background_audit_interval_seconds 300.0",
            "gomemlimit_injector_background_audit_leader 1.0",
            "gomemlimit_injector_background_audit_last_completed_timestamp_seconds 1900000000.5",
            "gomemlimit_injector_background_audit_last_duration_seconds 0.25",
            "gomemlimit_injector_background_audit_pods 7.0",
            r#"gomemlimit_injector_background_audit_scans_total{result="success"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_scan_replaces_the_last_one_and_a_follower_reports_no_counts() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.background_audit_enabled(Duration::from_secs(300));
        metrics.set_background_leader(true);
        metrics.record_scan(
            findings(7, &[("shop", 3), ("web", 1)]),
            Duration::from_millis(250),
            1_900_000_000.5,
        );
        // Compliant again: the namespace's series goes.
        metrics.record_scan(
            findings(7, &[("shop", 2)]),
            Duration::from_millis(250),
            1_900_000_300.0,
        );
        let text = encode(&registry).unwrap();
        assert!(
            text.contains(r#"gomemlimit_injector_noncompliant_pods{namespace="shop"} 2"#),
            "{text}"
        );
        assert!(!text.contains(r#"namespace="web""#), "{text}");
        // Another replica took the Lease over: this one's counts would be stale.
        metrics.set_background_leader(false);
        let text = encode(&registry).unwrap();
        assert!(
            !text.contains("gomemlimit_injector_noncompliant_pods{"),
            "{text}"
        );
        assert!(
            !text.contains("\ngomemlimit_injector_background_audit_pods "),
            "{text}"
        );
        assert!(
            text.contains("gomemlimit_injector_background_audit_leader 0.0"),
            "{text}"
        );
        assert!(
            text.contains(
                "gomemlimit_injector_background_audit_last_completed_timestamp_seconds 1900000300.0"
            ),
            "{text}"
        );
    }
}
