//! What a container without a memory limit of its own may use of a pod-level memory limit
//! (Kubernetes 1.34+): the pod limit minus the limits of the containers that run beside
//! it. The pod's containers and native sidecars run together for the pod's life; an
//! ordinary init container runs before them, beside only the sidecars declared before it,
//! and does not count against them.

use std::borrow::Borrow;

use super::read::{Container, Runs};
use crate::quantity::Quantity;

/// The share of the pod limit one container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Budget {
    /// The pod has no memory limit: the container's own rules apply.
    NoPodLimit,
    /// What is left of the pod limit, for this container alone.
    Left {
        bytes: u64,
        /// How it was computed, e.g. `200Mi - 100Mi (sidecar) = 104857600`.
        arithmetic: String,
    },
    /// The container gets no GOMEMLIMIT from the pod limit, and why.
    Nothing(String),
}

/// Whether `other` runs while `this` does.
fn beside(this: Runs, other: Runs) -> bool {
    match this {
        Runs::Before { index } => matches!(other, Runs::Sidecar { index: j } if j < index),
        Runs::Sidecar { .. } | Runs::Main => matches!(other, Runs::Sidecar { .. } | Runs::Main),
    }
}

/// The budget of `containers[at]`, which has no limit of its own, under `pod_limit`.
pub(super) fn of<'a, C: Borrow<Container<'a>>>(
    pod_limit: Option<&Quantity>,
    containers: impl IntoIterator<Item = C>,
    this: &Container<'_>,
    at: usize,
) -> Budget {
    let Some(pod_limit) = pod_limit else {
        return Budget::NoPodLimit;
    };
    let mut used: u64 = 0;
    let mut arithmetic = pod_limit.as_str().to_owned();
    for (i, other) in containers.into_iter().enumerate() {
        let other = other.borrow();
        if i == at || !beside(this.runs, other.runs) {
            continue;
        }
        let Some(limit) = &other.memory.limit else {
            return Budget::Nothing(format!(
                "has no memory limit and shares the pod limit with {:?}, which has none either; \
                 left unchanged",
                other.name
            ));
        };
        let Ok(limit) = Quantity::parse(limit) else {
            return Budget::Nothing(format!(
                "has no memory limit, and what is left of the pod limit is unknown: {:?} has an \
                 unreadable limit; left unchanged",
                other.name
            ));
        };
        used = used.saturating_add(limit.bytes());
        arithmetic.push_str(&format!(" - {} ({})", limit.as_str(), other.name));
    }
    let total = pod_limit.bytes();
    if used >= total {
        return Budget::Nothing(format!(
            "has no memory limit, and nothing is left of the pod limit: {arithmetic} <= 0; \
             left unchanged"
        ));
    }
    let bytes = total - used;
    if used > 0 {
        arithmetic.push_str(&format!(" = {bytes}"));
    }
    Budget::Left { bytes, arithmetic }
}

#[cfg(test)]
mod tests {
    use super::super::read::{Holder, Memory, Place};
    use super::super::view::Field;
    use super::*;

    fn c(name: &'static str, runs: Runs, limit: Option<&str>) -> Container<'static> {
        Container {
            place: Place::Spec,
            name,
            memory: Memory {
                limit: limit.map(Into::into),
                request: None,
            },
            runs,
            memory_resize: None,
            env: &Field::Absent,
            env_from: false,
            holder: Holder::default(),
        }
    }

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap()
    }

    #[test]
    fn takes_what_the_containers_beside_it_leave() {
        let pod = [
            c("init", Runs::Before { index: 0 }, Some("1Gi")),
            c("side", Runs::Sidecar { index: 1 }, Some("20Mi")),
            c("app", Runs::Main, None),
            c("other", Runs::Main, Some("100Mi")),
        ];
        assert_eq!(
            of(Some(&q("200Mi")), &pod, &pod[2], 2),
            Budget::Left {
                bytes: 80 << 20,
                arithmetic: "200Mi - 20Mi (side) - 100Mi (other) = 83886080".into()
            }
        );
    }

    #[test]
    fn an_ordinary_init_container_shares_only_with_earlier_sidecars() {
        let pod = [
            c("side", Runs::Sidecar { index: 0 }, Some("20Mi")),
            c("init", Runs::Before { index: 1 }, None),
            c("late", Runs::Sidecar { index: 2 }, Some("1Gi")),
            c("app", Runs::Main, Some("1Gi")),
        ];
        assert_eq!(
            of(Some(&q("100Mi")), &pod, &pod[1], 1),
            Budget::Left {
                bytes: 80 << 20,
                arithmetic: "100Mi - 20Mi (side) = 83886080".into()
            }
        );
    }

    #[test]
    fn the_whole_limit_for_a_container_alone() {
        let pod = [c("app", Runs::Main, None)];
        assert_eq!(
            of(Some(&q("1Gi")), &pod, &pod[0], 0),
            Budget::Left {
                bytes: 1 << 30,
                arithmetic: "1Gi".into()
            }
        );
        assert_eq!(of(None, &pod, &pod[0], 0), Budget::NoPodLimit);
    }

    #[test]
    fn nothing_when_the_limit_is_used_up_shared_or_unknown() {
        let used_up = [
            c("app", Runs::Main, None),
            c("big", Runs::Main, Some("200Mi")),
        ];
        let Budget::Nothing(why) = of(Some(&q("200Mi")), &used_up, &used_up[0], 0) else {
            panic!("a budget from nothing");
        };
        assert!(why.contains("nothing is left"), "{why}");
        let shared = [c("a", Runs::Main, None), c("b", Runs::Main, None)];
        let Budget::Nothing(why) = of(Some(&q("200Mi")), &shared, &shared[0], 0) else {
            panic!("a shared budget given to one");
        };
        assert!(why.contains("shares the pod limit with \"b\""), "{why}");
        let unknown = [c("a", Runs::Main, None), c("b", Runs::Main, Some("lots"))];
        assert!(matches!(
            of(Some(&q("200Mi")), &unknown, &unknown[0], 0),
            Budget::Nothing(_)
        ));
    }
}
