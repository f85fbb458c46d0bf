//! The policy file as people write YAML: every key optional, each read on its own so that
//! an error names the key and the values it allows. `gogc: off` unquoted, which YAML 1.1
//! readers take for the boolean false, means `off`.

use std::path::Path;

use serde_json::Value;

use super::{Gogc, MissingLimit, Mode, PolicyError, parse_memory};
use crate::quantity::Quantity;

/// The keys a policy file may hold.
const KEYS: &str = "percent, gogc, missingLimit, defaultMemory, minPercent, maxPercent, \
                    excludeContainers, mode, restartOnResize";

/// The policy as written in the YAML file; every key is optional.
#[derive(Debug, Default)]
pub(super) struct PolicyFile {
    pub(super) percent: Option<u8>,
    pub(super) gogc: Option<Gogc>,
    pub(super) missing_limit: Option<MissingLimit>,
    pub(super) default_memory: Option<Quantity>,
    pub(super) min_percent: Option<u8>,
    pub(super) max_percent: Option<u8>,
    pub(super) exclude_containers: Option<Vec<String>>,
    pub(super) mode: Option<Mode>,
    pub(super) restart_on_resize: Option<bool>,
}

impl PolicyFile {
    pub(super) fn read(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        PolicyFile::from_yaml(&text).map_err(|message| PolicyError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses the YAML text of a policy file. Unknown keys are errors, so a typo is caught.
    pub(super) fn from_yaml(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(PolicyFile::default());
        }
        let value: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let map = match value {
            Value::Null => return Ok(PolicyFile::default()),
            Value::Object(map) => map,
            other => {
                return Err(format!(
                    "expected a mapping of policy keys ({KEYS}), found {}",
                    kind(&other)
                ));
            }
        };
        let mut file = PolicyFile::default();
        for (key, value) in &map {
            file.set(key, value)
                .map_err(|allowed| format!("{key}: {}: allowed {allowed}", shown(value)))?;
        }
        Ok(file)
    }

    /// Sets `key`; an error is the description of the values it allows.
    fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        match key {
            "percent" => self.percent = Some(percent(value)?),
            "minPercent" => self.min_percent = Some(percent(value)?),
            "maxPercent" => self.max_percent = Some(percent(value)?),
            "gogc" => self.gogc = Some(gogc(value)?),
            "missingLimit" => {
                self.missing_limit = Some(choice(
                    value,
                    &[
                        ("skip", MissingLimit::Skip),
                        ("deny", MissingLimit::Deny),
                        ("default", MissingLimit::Default),
                    ],
                )?);
            }
            "mode" => {
                self.mode = Some(choice(
                    value,
                    &[("enforce", Mode::Enforce), ("audit", Mode::Audit)],
                )?);
            }
            "defaultMemory" => self.default_memory = memory(value)?,
            "excludeContainers" => self.exclude_containers = Some(names(value)?),
            "restartOnResize" => {
                let allowed = || "values are true or false".to_owned();
                self.restart_on_resize = Some(value.as_bool().ok_or_else(allowed)?);
            }
            _ => return Err(format!("keys are {KEYS}")),
        }
        Ok(())
    }
}

fn percent(value: &Value) -> Result<u8, String> {
    value
        .as_u64()
        .and_then(|n| u8::try_from(n).ok())
        .filter(|n| *n <= 100)
        .ok_or_else(|| "values are integers 1 to 100".to_owned())
}

fn gogc(value: &Value) -> Result<Gogc, String> {
    let allowed = || "values are off, keep or an integer 0 to 999999".to_owned();
    match value {
        // YAML 1.1 reads an unquoted `off` as false.
        Value::Bool(false) => Ok(Gogc::Off),
        Value::String(text) => text.parse().map_err(|_| allowed()),
        Value::Number(n) if n.is_u64() => n.to_string().parse().map_err(|_| allowed()),
        _ => Err(allowed()),
    }
}

fn choice<T: Copy>(value: &Value, options: &[(&str, T)]) -> Result<T, String> {
    value
        .as_str()
        .and_then(|text| options.iter().find(|(name, _)| *name == text))
        .map(|(_, choice)| *choice)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
            format!("values are {}", names.join(", "))
        })
}

fn memory(value: &Value) -> Result<Option<Quantity>, String> {
    let allowed = "values are memory quantities greater than zero, such as 256Mi";
    let text = match value {
        // The chart leaves an empty value out; an empty string means unset too.
        Value::String(text) if text.is_empty() => return Ok(None),
        Value::String(text) => text.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(allowed.to_owned()),
    };
    parse_memory(&text)
        .map(Some)
        .map_err(|e| format!("{allowed} ({e})"))
}

fn names(value: &Value) -> Result<Vec<String>, String> {
    let allowed = || "values are lists of container names, such as [istio-proxy]".to_owned();
    value
        .as_array()
        .ok_or_else(allowed)?
        .iter()
        .map(|name| name.as_str().map(str::to_owned).ok_or_else(allowed))
        .collect()
}

/// A value as the message quotes it.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gogc_off_unquoted_is_off() {
        for text in ["gogc: off\n", "gogc: \"off\"\n", "gogc: 'off'\n"] {
            assert_eq!(
                PolicyFile::from_yaml(text).unwrap().gogc,
                Some(Gogc::Off),
                "{text}"
            );
        }
        assert_eq!(
            PolicyFile::from_yaml("gogc: 150\n").unwrap().gogc,
            Some(Gogc::Percent(150))
        );
    }

    #[test]
    fn every_error_names_the_key_and_what_it_allows() {
        let cases = [
            (
                "gogc: on\n",
                "gogc: true: allowed values are off, keep or an integer 0 to 999999",
            ),
            (
                "missingLimit: never\n",
                "missingLimit: \"never\": allowed values are skip, deny, default",
            ),
            (
                "mode: dry-run\n",
                "mode: \"dry-run\": allowed values are enforce, audit",
            ),
            (
                "percent: 150\n",
                "percent: 150: allowed values are integers 1 to 100",
            ),
            (
                "percent: ninety\n",
                "percent: \"ninety\": allowed values are integers 1 to 100",
            ),
            (
                "excludeContainers: istio-proxy\n",
                "excludeContainers: \"istio-proxy\": allowed values are lists of container names",
            ),
            ("percnt: 90\n", "percnt: 90: allowed keys are percent, gogc"),
        ];
        for (text, expected) in cases {
            let error = PolicyFile::from_yaml(text).unwrap_err();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
        assert!(
            PolicyFile::from_yaml("defaultMemory: 1.5.5\n")
                .unwrap_err()
                .starts_with("defaultMemory: \"1.5.5\": allowed values are memory quantities")
        );
    }
}
