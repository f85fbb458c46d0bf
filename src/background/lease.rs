//! Leader election on a `coordination.k8s.io/v1` Lease, so that one replica scans and the
//! others only serve. The rules are client-go's leader election:
//!
//! - a Lease that does not exist is created with us as the holder;
//! - a Lease without a holder (released) is taken at once;
//! - a Lease held by another is taken only when it has not changed for its
//!   `leaseDurationSeconds`, measured on *our* clock from when we first saw it that way
//!   (never by comparing its `renewTime` with our clock: the replicas' clocks may differ);
//! - the holder renews every [`RETRY`]; one that could not renew for [`RENEW_DEADLINE`]
//!   stops acting as the leader, before anyone else may take the Lease over;
//! - on shutdown the holder releases the Lease (no holder), so that another replica takes
//!   it at its next try instead of waiting for it to expire.
//!
//! Every write is a replace carrying the `resourceVersion` that was read: of two replicas
//! that try at once, one gets a conflict and stays a follower. [`Elector`] decides; [`run`]
//! reads and writes the Lease and reports leadership on a watch channel.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::error_chain;
use crate::watch::LastSeen;

/// How long a Lease is valid without a renewal.
pub(crate) const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The holder stops leading when it could not renew for this long (less than
/// [`LEASE_DURATION`], so that it has stopped before another replica may take over).
pub(crate) const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the Lease is read: renewed by the holder, watched by the others.
pub(crate) const RETRY: Duration = Duration::from_secs(2);

/// The Lease to hold, and who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per process: the pod name and a random suffix.
    pub identity: String,
}

/// This process's identity: `POD_NAME` (else the host name) and a random suffix, so that
/// a restarted container never mistakes its predecessor's Lease for its own.
pub(crate) fn identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let name = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "gomemlimit-injector".to_owned());
    // RandomState is seeded randomly per process; its hash of the pid and the time is
    // random enough to tell two processes apart.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{name}_{:08x}", hasher.finish() as u32)
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// There is none: create it, held by us.
    Create(Lease),
    /// Write this (ours, renewed; or taken over) with the `resourceVersion` read.
    Write(Lease),
    /// Another replica holds it.
    Follow { holder: String },
}

/// The decisions of leader election, apart from any I/O.
#[derive(Debug)]
pub(crate) struct Elector {
    identity: String,
    /// The Lease's spec as last seen, and when it was first seen that way.
    observed: Option<(LeaseSpec, Instant)>,
    /// When we last wrote the Lease as its holder.
    renewed: Option<Instant>,
}

impl Elector {
    pub(crate) fn new(identity: String) -> Self {
        Elector {
            identity,
            observed: None,
            renewed: None,
        }
    }

    /// Whether we lead at `now`: we renewed within [`RENEW_DEADLINE`].
    pub(crate) fn leads(&self, now: Instant) -> bool {
        self.renewed
            .is_some_and(|at| now.saturating_duration_since(at) < RENEW_DEADLINE)
    }

    /// Decides on the Lease as read at `now` (`None`: it does not exist); `wall` is the
    /// time written into it.
    pub(crate) fn step(&mut self, now: Instant, wall: MicroTime, current: Option<&Lease>) -> Step {
        let Some(current) = current else {
            self.observed = None;
            return Step::Create(Lease {
                metadata: ObjectMeta::default(),
                spec: Some(self.held(None, wall, 0)),
            });
        };
        let spec = current.spec.clone().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| *seen != spec);
        if changed {
            self.observed = Some((spec.clone(), now));
        }
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let write = |spec: LeaseSpec| {
            Step::Write(Lease {
                metadata: current.metadata.clone(),
                spec: Some(spec),
            })
        };
        match holder {
            Some(h) if h == self.identity => {
                write(self.held(spec.acquire_time.clone(), wall, transitions))
            }
            None => write(self.held(None, wall, transitions + 1)),
            Some(h) => {
                let seen_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
                let valid = spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map_or(LEASE_DURATION, Duration::from_secs);
                if now.saturating_duration_since(seen_at) >= valid {
                    write(self.held(None, wall, transitions + 1))
                } else {
                    self.renewed = None;
                    Step::Follow { holder: h }
                }
            }
        }
    }

    /// Records that the write decided by [`Elector::step`] at `now` succeeded.
    pub(crate) fn written(&mut self, now: Instant, lease: &Lease) {
        self.renewed = Some(now);
        self.observed = lease.spec.clone().map(|spec| (spec, now));
    }

    /// The Lease released by us: no holder, so the next reader takes it at once.
    pub(crate) fn released(&self, current: &Lease, wall: MicroTime) -> Option<Lease> {
        let spec = current.spec.as_ref()?;
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return None;
        }
        Some(Lease {
            metadata: current.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                renew_time: Some(wall),
                ..spec.clone()
            }),
        })
    }

    /// The spec of a Lease held by us, renewed at `wall`.
    fn held(&self, acquired: Option<MicroTime>, wall: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| wall.clone())),
            renew_time: Some(wall),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

fn wall_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Keeps trying to lead on `config`'s Lease until `stop` turns true, sending whether we
/// lead on `leading`; then releases the Lease if we hold it.
pub(crate) async fn run(
    leases: Api<Lease>,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut elector = Elector::new(config.identity.clone());
    let mut last_error = LastSeen::new(None::<String>);
    let mut last_holder = LastSeen::new(None::<String>);
    loop {
        let result = try_once(&leases, &config, &mut elector).await;
        match result {
            Ok(holder) => {
                last_error = LastSeen::new(None);
                // None: another replica wrote first; who holds it shows at the next read.
                if let Some(holder) = holder
                    && last_holder.changed(Some(holder.clone()))
                {
                    info!(lease = %config.name, %holder, identity = %config.identity, "background audit lease holder");
                }
            }
            Err(e) => {
                if last_error.changed(Some(e.clone())) {
                    warn!(lease = %config.name, namespace = %config.namespace, error = %e, "failed to read or write the background audit lease; will retry");
                }
            }
        }
        leading.send_if_modified(|was| {
            let now = elector.leads(Instant::now());
            std::mem::replace(was, now) != now
        });
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    leading.send_replace(false);
    release(&leases, &config, &elector).await;
}

/// One read and, when it is ours to take or renew, one write. Returns the holder, or
/// `None` when another replica's write came first.
async fn try_once(
    leases: &Api<Lease>,
    config: &LeaseConfig,
    elector: &mut Elector,
) -> Result<Option<String>, String> {
    let current = leases
        .get_opt(&config.name)
        .await
        .map_err(|e| format!("failed to read: {}", error_chain(&e)))?;
    let now = Instant::now();
    let step = elector.step(now, wall_now(), current.as_ref());
    let written = match step {
        Step::Follow { holder } => return Ok(Some(holder)),
        Step::Create(mut lease) => {
            lease.metadata.name = Some(config.name.clone());
            lease.metadata.namespace = Some(config.namespace.clone());
            leases.create(&PostParams::default(), &lease).await
        }
        Step::Write(lease) => {
            leases
                .replace(&config.name, &PostParams::default(), &lease)
                .await
        }
    };
    match written {
        Ok(lease) => {
            elector.written(now, &lease);
            Ok(Some(config.identity.clone()))
        }
        // Another replica wrote first; read again at the next try.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(format!("failed to write: {}", error_chain(&e))),
    }
}

/// Hands the Lease back, if we hold it, within a second.
async fn release(leases: &Api<Lease>, config: &LeaseConfig, elector: &Elector) {
    let attempt = async {
        let current = leases.get_opt(&config.name).await.ok().flatten()?;
        let released = elector.released(&current, wall_now())?;
        leases
            .replace(&config.name, &PostParams::default(), &released)
            .await
            .ok()
    };
    if tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
    {
        info!(lease = %config.name, "released the background audit lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(seconds: i64) -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn held_by(holder: Option<&str>, renewed: i64, version: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("audit".to_owned()),
                resource_version: Some(version.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: Some(wall(renewed)),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    fn written(step: Step) -> Lease {
        match step {
            Step::Write(lease) | Step::Create(lease) => lease,
            Step::Follow { holder } => panic!("follows {holder}"),
        }
    }

    #[test]
    fn creates_a_missing_lease_held_by_us() {
        let mut e = Elector::new("a".to_owned());
        let t = Instant::now();
        let Step::Create(lease) = e.step(t, wall(100), None) else {
            panic!("no create");
        };
        let spec = lease.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert!(!e.leads(t), "not before the write succeeded");
        e.written(t, &lease);
        assert!(e.leads(t));
    }

    #[test]
    fn follows_a_live_holder_and_takes_over_only_after_the_lease_duration() {
        let mut e = Elector::new("b".to_owned());
        let t0 = Instant::now();
        let lease = held_by(Some("a"), 100, "1");
        assert_eq!(
            e.step(t0, wall(100), Some(&lease)),
            Step::Follow {
                holder: "a".to_owned()
            }
        );
        // Unchanged for less than its duration, on our clock: still a's.
        let t1 = t0 + Duration::from_secs(14);
        assert!(matches!(
            e.step(t1, wall(9999), Some(&lease)),
            Step::Follow { .. }
        ));
        // The holder renewed: the clock starts again.
        let renewed = held_by(Some("a"), 114, "2");
        assert!(matches!(
            e.step(t1, wall(114), Some(&renewed)),
            Step::Follow { .. }
        ));
        let t2 = t1 + Duration::from_secs(14);
        assert!(matches!(
            e.step(t2, wall(128), Some(&renewed)),
            Step::Follow { .. }
        ));
        // Fifteen seconds without a change: taken over, with the version read.
        let t3 = t1 + Duration::from_secs(15);
        let taken = written(e.step(t3, wall(129), Some(&renewed)));
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("2"));
        let spec = taken.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(wall(129)));
    }

    #[test]
    fn a_lease_renewed_long_ago_by_a_skewed_clock_is_not_taken_at_once() {
        // renewTime far in the past by our clock does not make it expired: we wait for a
        // whole lease duration without a change first.
        let mut e = Elector::new("b".to_owned());
        let t = Instant::now();
        let lease = held_by(Some("a"), 1, "7");
        assert!(matches!(
            e.step(t, wall(1_000_000), Some(&lease)),
            Step::Follow { .. }
        ));
    }

    #[test]
    fn takes_a_released_lease_at_once() {
        let mut e = Elector::new("b".to_owned());
        let lease = held_by(None, 100, "5");
        let taken = written(e.step(Instant::now(), wall(101), Some(&lease)));
        assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("b"));
    }

    #[test]
    fn renews_its_own_lease_keeping_the_acquire_time() {
        let mut e = Elector::new("a".to_owned());
        let mut lease = held_by(Some("a"), 100, "3");
        lease.spec.as_mut().unwrap().acquire_time = Some(wall(50));
        let renewed = written(e.step(Instant::now(), wall(102), Some(&lease)));
        let spec = renewed.spec.unwrap();
        assert_eq!(spec.acquire_time, Some(wall(50)));
        assert_eq!(spec.renew_time, Some(wall(102)));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn stops_leading_when_it_cannot_renew_within_the_deadline() {
        let mut e = Elector::new("a".to_owned());
        let t = Instant::now();
        let lease = written(e.step(t, wall(100), None));
        e.written(t, &lease);
        assert!(e.leads(t + RENEW_DEADLINE - Duration::from_millis(1)));
        assert!(!e.leads(t + RENEW_DEADLINE));
        assert!(RENEW_DEADLINE < LEASE_DURATION);
    }

    #[test]
    fn losing_the_lease_to_another_stops_leading_at_once() {
        let mut e = Elector::new("a".to_owned());
        let t = Instant::now();
        let lease = written(e.step(t, wall(100), None));
        e.written(t, &lease);
        let other = held_by(Some("b"), 101, "9");
        assert!(matches!(
            e.step(t, wall(101), Some(&other)),
            Step::Follow { .. }
        ));
        assert!(!e.leads(t));
    }

    #[test]
    fn releases_only_its_own_lease() {
        let e = Elector::new("a".to_owned());
        let released = e
            .released(&held_by(Some("a"), 100, "4"), wall(110))
            .unwrap();
        let spec = released.spec.unwrap();
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(released.metadata.resource_version.as_deref(), Some("4"));
        assert!(
            e.released(&held_by(Some("b"), 100, "4"), wall(110))
                .is_none()
        );
    }

    #[test]
    fn identities_differ_between_calls() {
        assert_ne!(identity(), identity());
    }
}
