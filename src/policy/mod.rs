//! The policy: what the engine does to a pod. Read from a YAML file (`--config`, what a
//! ConfigMap mounts), then overridden by settings given outside it (the flags and
//! `GOMEMLIMIT_INJECTOR_<NAME>` variables of the command line), and validated.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

mod file;

use file::PolicyFile;

use crate::quantity::Quantity;

/// What to set `GOGC` to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gogc {
    /// `GOGC=off`: the GC runs only when the heap nears `GOMEMLIMIT`.
    Off,
    /// Do not add `GOGC`.
    Keep,
    /// `GOGC=<n>`.
    Percent(u32),
}

impl fmt::Display for Gogc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gogc::Off => f.write_str("off"),
            Gogc::Keep => f.write_str("keep"),
            Gogc::Percent(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for Gogc {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Gogc::Off),
            "keep" => Ok(Gogc::Keep),
            // Digits only: Go reads GOGC with strconv.Atoi, and a sign or spaces would be
            // a different (or no) setting.
            _ if !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Gogc::Percent(s.parse().map_err(|_| gogc_error(s))?))
            }
            _ => Err(gogc_error(s)),
        }
    }
}

fn gogc_error(s: &str) -> String {
    format!("{s:?} is not a GOGC setting: expected \"off\", \"keep\" or an integer 0..999999")
}

/// What to do with a container that has neither a memory request nor a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingLimit {
    /// Leave the container alone and warn.
    Skip,
    /// Reject the pod.
    Deny,
    /// Set request and limit to `defaultMemory`.
    Default,
}

/// Whether changes are applied or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Audit,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub percent: u8,
    pub gogc: Gogc,
    pub missing_limit: MissingLimit,
    pub default_memory: Option<Quantity>,
    pub min_percent: u8,
    pub max_percent: u8,
    pub exclude_containers: BTreeSet<String>,
    pub mode: Mode,
    /// Give containers with a downward-API GOMEMLIMIT `resizePolicy` memory:
    /// `RestartContainer`, so that an in-place resize restarts them with the new limit.
    pub restart_on_resize: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            percent: 100,
            gogc: Gogc::Off,
            missing_limit: MissingLimit::Skip,
            default_memory: None,
            min_percent: 50,
            max_percent: 100,
            exclude_containers: BTreeSet::new(),
            mode: Mode::Enforce,
            restart_on_resize: true,
        }
    }
}

/// Errors loading or validating a policy. Each names the file, flag or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("failed to read policy file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse policy file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid policy{}: {setting}: {message}", origin(.file.as_deref()))]
    Invalid {
        /// The file the policy was read from, with the flags over it.
        file: Option<PathBuf>,
        setting: &'static str,
        message: String,
    },
}

/// How an invalid policy names where it came from.
fn origin(file: Option<&Path>) -> String {
    file.map(|path| format!(" (file {} and flags)", path.display()))
        .unwrap_or_default()
}

impl PolicyError {
    fn invalid(setting: &'static str, message: impl Into<String>) -> Self {
        PolicyError::Invalid {
            file: None,
            setting,
            message: message.into(),
        }
    }

    /// The same error, said of a policy read from `file` (and flags).
    fn in_file(self, file: Option<&Path>) -> Self {
        match self {
            PolicyError::Invalid {
                setting, message, ..
            } => PolicyError::Invalid {
                file: file.map(Path::to_owned),
                setting,
                message,
            },
            other => other,
        }
    }
}

/// Where a policy comes from: a file, if any, and settings that override it.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    /// The policy YAML file; the server watches it for changes.
    pub(crate) file: Option<PathBuf>,
    pub(crate) overrides: Overrides,
}

/// Policy settings given outside the file (flags and variables); each wins over the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) percent: Option<u8>,
    pub(crate) gogc: Option<Gogc>,
    pub(crate) missing_limit: Option<MissingLimit>,
    pub(crate) default_memory: Option<Quantity>,
    pub(crate) min_percent: Option<u8>,
    pub(crate) max_percent: Option<u8>,
    pub(crate) exclude_containers: Option<Vec<String>>,
    pub(crate) mode: Option<Mode>,
    pub(crate) restart_on_resize: Option<bool>,
}

impl PolicySource {
    /// The policy in `file`, if any (else the defaults), with nothing over it.
    pub fn new(file: Option<PathBuf>) -> Self {
        PolicySource {
            file,
            overrides: Overrides::default(),
        }
    }

    /// Reads the file (if any), applies the overrides and validates the result.
    pub(crate) fn load(&self) -> Result<Policy, PolicyError> {
        let written = match &self.file {
            Some(path) => PolicyFile::read(path)?,
            None => PolicyFile::default(),
        };
        self.overrides
            .over(written)
            .and_then(|policy| policy.validate().map(|()| policy))
            .map_err(|e| e.in_file(self.file.as_deref()))
    }
}

impl Overrides {
    /// The policy `file` says, with these settings over it and defaults for the rest.
    fn over(&self, file: PolicyFile) -> Result<Policy, PolicyError> {
        let defaults = Policy::default();
        let gogc = self.gogc.or(file.gogc).unwrap_or(defaults.gogc);
        let default_memory = self.default_memory.clone().or(file.default_memory);
        let exclude_containers = self
            .exclude_containers
            .clone()
            .or(file.exclude_containers)
            .unwrap_or_default();
        Ok(Policy {
            percent: self.percent.or(file.percent).unwrap_or(defaults.percent),
            gogc,
            missing_limit: (self.missing_limit.or(file.missing_limit))
                .unwrap_or(defaults.missing_limit),
            default_memory,
            min_percent: (self.min_percent.or(file.min_percent)).unwrap_or(defaults.min_percent),
            max_percent: (self.max_percent.or(file.max_percent)).unwrap_or(defaults.max_percent),
            exclude_containers: exclude_containers
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            mode: self.mode.or(file.mode).unwrap_or(defaults.mode),
            restart_on_resize: (self.restart_on_resize.or(file.restart_on_resize))
                .unwrap_or(defaults.restart_on_resize),
        })
    }
}

/// A memory quantity for `defaultMemory`: valid, and greater than zero.
pub(crate) fn parse_memory(s: &str) -> Result<Quantity, String> {
    let q = Quantity::parse(s).map_err(|e| e.to_string())?;
    if q.is_zero() {
        return Err("memory must be greater than zero".to_owned());
    }
    Ok(q)
}

impl Policy {
    /// Checks the cross-setting rules; the error names the setting at fault.
    pub(crate) fn validate(&self) -> Result<(), PolicyError> {
        for (setting, value) in [
            ("percent", self.percent),
            ("minPercent", self.min_percent),
            ("maxPercent", self.max_percent),
        ] {
            if !(1..=100).contains(&value) {
                let message = format!("{value} is not within 1..100");
                return Err(PolicyError::invalid(setting, message));
            }
        }
        let (min, max) = (self.min_percent, self.max_percent);
        if min > max {
            let message = format!("{min} is greater than maxPercent {max}");
            return Err(PolicyError::invalid("minPercent", message));
        }
        if !(min..=max).contains(&self.percent) {
            let message = format!(
                "{} is outside [minPercent {min}, maxPercent {max}]",
                self.percent
            );
            return Err(PolicyError::invalid("percent", message));
        }
        if self.missing_limit == MissingLimit::Default && self.default_memory.is_none() {
            let message = "must be set when missingLimit is \"default\"";
            return Err(PolicyError::invalid("defaultMemory", message));
        }
        if let Some(q) = &self.default_memory
            && q.is_zero()
        {
            return Err(PolicyError::invalid(
                "defaultMemory",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_match_the_contract() {
        let p = PolicySource::default().load().unwrap();
        assert_eq!(p.percent, 100);
        assert_eq!(p.gogc, Gogc::Off);
        assert_eq!(p.missing_limit, MissingLimit::Skip);
        assert_eq!((p.min_percent, p.max_percent), (50, 100));
        assert_eq!(p.mode, Mode::Enforce);
        assert!(p.exclude_containers.is_empty());
    }

    #[test]
    fn reads_every_key_from_the_file() {
        let f = file(
            "percent: 90\ngogc: 100\nmissingLimit: default\ndefaultMemory: 256Mi\n\
             minPercent: 60\nmaxPercent: 95\nexcludeContainers: [istio-proxy, linkerd-proxy]\nmode: audit\n",
        );
        let p = PolicySource::new(Some(f.path().to_owned())).load().unwrap();
        assert_eq!(p.percent, 90);
        assert_eq!(p.gogc, Gogc::Percent(100));
        assert_eq!(p.missing_limit, MissingLimit::Default);
        assert_eq!(p.default_memory.unwrap().bytes(), 256 << 20);
        assert_eq!((p.min_percent, p.max_percent), (60, 95));
        assert_eq!(p.mode, Mode::Audit);
        assert!(p.exclude_containers.contains("istio-proxy"));
    }

    #[test]
    fn flags_override_the_file() {
        let f = file("percent: 90\ngogc: keep\n");
        let p = PolicySource {
            file: Some(f.path().to_owned()),
            overrides: Overrides {
                percent: Some(80),
                ..Overrides::default()
            },
        }
        .load()
        .unwrap();
        assert_eq!(p.percent, 80);
        assert_eq!(p.gogc, Gogc::Keep);
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_file() {
        let f = file("percnt: 90\n");
        let err = PolicySource::new(Some(f.path().to_owned()))
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("percnt"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let err = PolicySource::new(Some("/nonexistent/policy.yaml".into()))
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/policy.yaml"), "{err}");
    }

    #[test]
    fn rejects_inconsistent_settings() {
        let cases: &[(&str, &str)] = &[
            ("missingLimit: default\n", "defaultMemory"),
            ("defaultMemory: 1.5.5\n", "defaultMemory"),
            (
                "minPercent: 90\nmaxPercent: 80\npercent: 85\n",
                "minPercent",
            ),
            ("percent: 40\n", "percent"),
            ("percent: 0\n", "percent"),
            ("gogc: fast\n", "gogc"),
            ("gogc: -5\n", "gogc"),
        ];
        for (yaml, setting) in cases {
            let f = file(yaml);
            let err = PolicySource::new(Some(f.path().to_owned()))
                .load()
                .unwrap_err()
                .to_string();
            assert!(err.contains(setting), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn parses_gogc_values() {
        assert_eq!("off".parse::<Gogc>(), Ok(Gogc::Off));
        assert_eq!("keep".parse::<Gogc>(), Ok(Gogc::Keep));
        assert_eq!("100".parse::<Gogc>(), Ok(Gogc::Percent(100)));
        for bad in ["", "-1", "+5", "1e3", "OFF", " 100", "1234567"] {
            assert!(bad.parse::<Gogc>().is_err(), "{bad:?}");
        }
    }
}
