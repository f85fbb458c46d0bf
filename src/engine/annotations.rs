//! The per-pod annotations: overrides of the policy within its bounds, container
//! exclusions, and a message for each annotation that is not valid.

use std::collections::BTreeSet;

use super::read::Strings;
use super::{EXCLUDE_CONTAINERS, GOGC_ANNOTATION, MODE, PERCENT};
use crate::policy::{Gogc, Policy};

/// The settings in force for one pod: the policy's, overridden by the pod's annotations.
pub(super) struct Settings<'a> {
    pub(super) percent: u8,
    pub(super) gogc: Gogc,
    pub(super) audit_only: bool,
    /// The containers to leave alone, named by the policy or the pod.
    pub(super) excluded: BTreeSet<&'a str>,
    /// One message per invalid annotation.
    pub(super) invalid: Vec<String>,
}

impl<'a> Settings<'a> {
    /// The settings for a pod with `annotations`, starting from `policy` in a mode that is
    /// audit only or not.
    pub(super) fn read(annotations: &Strings<'a>, policy: &'a Policy, audit_only: bool) -> Self {
        let mut settings = Settings {
            percent: policy.percent,
            gogc: policy.gogc,
            audit_only,
            excluded: policy
                .exclude_containers
                .iter()
                .map(String::as_str)
                .collect(),
            invalid: Vec::new(),
        };
        if let Some(value) = annotations.get(MODE) {
            settings.mode(value);
        }
        if let Some(value) = annotations.get(PERCENT) {
            settings.percent(value, policy);
        }
        if let Some(value) = annotations.get(GOGC_ANNOTATION) {
            settings.gogc(value);
        }
        if let Some(value) = annotations.get(EXCLUDE_CONTAINERS) {
            settings.exclude(value);
        }
        settings
    }

    fn mode(&mut self, value: &str) {
        match value {
            "audit" => self.audit_only = true,
            _ => self.invalid.push(format!(
                "invalid annotation {MODE}={value:?}: the only allowed value is \"audit\""
            )),
        }
    }

    fn percent(&mut self, value: &str, policy: &Policy) {
        let (lo, hi) = (policy.min_percent, policy.max_percent);
        match value.parse::<u8>() {
            Ok(p) if value.bytes().all(|b| b.is_ascii_digit()) && (lo..=hi).contains(&p) => {
                self.percent = p;
            }
            _ => self.invalid.push(format!(
                "invalid annotation {PERCENT}={value:?}: allowed values are integers {lo} to {hi}"
            )),
        }
    }

    fn gogc(&mut self, value: &str) {
        match value.parse::<Gogc>() {
            Ok(gogc) => self.gogc = gogc,
            Err(_) => self.invalid.push(format!(
                "invalid annotation {GOGC_ANNOTATION}={value:?}: allowed values are off, keep or an integer"
            )),
        }
    }

    fn exclude(&mut self, value: &'a str) {
        let names: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        match names.iter().find(|n| !is_dns_label(n)) {
            None => self.excluded.extend(names),
            Some(bad) => self.invalid.push(format!(
                "invalid annotation {EXCLUDE_CONTAINERS}: {bad:?} is not a container name; \
                 expected comma-separated container names"
            )),
        }
    }
}

/// RFC 1123 label, the format of container names.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}
