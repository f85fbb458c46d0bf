//! Pods of hostile shapes inside valid reviews, generated from the fuzzer's bytes: names
//! that need escaping in a JSON pointer, quantities valid and not, `GOMEMLIMIT` and `GOGC`
//! in every form, annotations with wrong values, a status annotation that lies, pod-level
//! resources, native sidecars, resize policies, and values of the wrong JSON type where
//! the webhook expects a list or an object.

use arbitrary::{Arbitrary, Unstructured};
use gomemlimit_injector::admission::Endpoint;
use gomemlimit_injector::policy::{Gogc, MissingLimit, Mode, Policy};
use gomemlimit_injector::quantity::Quantity;
use serde_json::{Map, Value, json};

/// One generated case: a review, the endpoint it goes to and the policy in force.
#[derive(Debug)]
pub struct Case {
    pub endpoint: Endpoint,
    pub policy: Policy,
    pub body: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let endpoint = if u.ratio(1, 5)? {
            Endpoint::Audit
        } else {
            Endpoint::Mutate
        };
        let policy = policy(u)?;
        let pod = Pod::arbitrary(u)?.to_json();
        let review = match u.int_in_range(0..=9)? {
            0 => resize_review(&pod, u)?,
            1 => other_review(&pod, u)?,
            _ => create_review(&pod),
        };
        let body = serde_json::to_vec(&review).map_err(|_| arbitrary::Error::IncorrectFormat)?;
        Ok(Case {
            endpoint,
            policy,
            body,
        })
    }
}

fn policy(u: &mut Unstructured<'_>) -> arbitrary::Result<Policy> {
    let min_percent = u.int_in_range(1..=100)?;
    let max_percent = u.int_in_range(min_percent..=100)?;
    Ok(Policy {
        percent: u.int_in_range(min_percent..=max_percent)?,
        gogc: match u.int_in_range(0..=2)? {
            0 => Gogc::Off,
            1 => Gogc::Keep,
            _ => Gogc::Percent(u.int_in_range(1..=1000)?),
        },
        missing_limit: *u.choose(&[MissingLimit::Skip, MissingLimit::Deny, MissingLimit::Default])?,
        default_memory: Quantity::parse(u.choose(&["64Mi", "1Gi", "100M"])?).ok(),
        min_percent,
        max_percent,
        exclude_containers: if u.ratio(1, 8)? {
            [pick_name(u)?].into_iter().collect()
        } else {
            Default::default()
        },
        mode: if u.ratio(1, 8)? {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        restart_on_resize: u.ratio(4, 5)?,
    })
}

fn review(uid: &str, operation: &str, pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "fuzz",
            "operation": operation,
            "userInfo": {"username": "fuzz"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
        }
    })
}

fn create_review(pod: &Value) -> Value {
    review("c0ffee00-0000-4000-8000-000000000001", "CREATE", pod)
}

/// An in-place resize: the old pod is this one, the new one has other memory limits.
fn resize_review(pod: &Value, u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let mut new = pod.clone();
    if let Some(containers) = new
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for c in containers.iter_mut().filter(|c| c.is_object()) {
            c["resources"] = Resources::arbitrary(u)?.to_json();
        }
    }
    let mut r = review("c0ffee00-0000-4000-8000-000000000002", "UPDATE", &new);
    r["request"]["subResource"] = json!("resize");
    r["request"]["requestSubResource"] = json!("resize");
    r["request"]["oldObject"] = pod.clone();
    Ok(r)
}

/// What the webhook lets through unchanged: another operation or sub-resource.
fn other_review(pod: &Value, u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let operation = *u.choose(&["UPDATE", "DELETE", "CONNECT", "CREATE"])?;
    let mut r = review("c0ffee00-0000-4000-8000-000000000003", operation, pod);
    match u.int_in_range(0..=2)? {
        0 => r["request"]["subResource"] = json!(*u.choose(&["status", "binding", "ephemeralcontainers"])?),
        1 => r["request"]["object"] = Value::Null,
        _ => r["request"]["kind"]["kind"] = json!("Deployment"),
    }
    Ok(r)
}

/// A JSON value where a list or an object is expected: usually the right kind, sometimes
/// not.
#[derive(Arbitrary, Debug)]
enum Shape<T> {
    Right(T),
    Null,
    Number(i32),
    Text(String),
    Empty,
}

impl<T> Shape<T> {
    fn to_json(&self, right: impl FnOnce(&T) -> Value, empty: Value) -> Value {
        match self {
            Shape::Right(t) => right(t),
            Shape::Null => Value::Null,
            Shape::Number(n) => json!(n),
            Shape::Text(s) => json!(s),
            Shape::Empty => empty,
        }
    }
}

/// Names, mostly from a small set so that exclusions and duplicates meet, some needing
/// escapes (`~`, `/`), some free text.
#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Free(String),
}

const NAMES: &[&str] = &["app", "sidecar", "init", "a~b", "a/b", "", "Ünï", "app "];

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Known(i) => NAMES[usize::from(*i) % NAMES.len()].to_owned(),
            Name::Free(s) => s.clone(),
        }
    }
}

fn pick_name(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(Name::arbitrary(u)?.text())
}

/// A quantity: from the Kubernetes grammar, near it, or not text at all.
#[derive(Arbitrary, Debug)]
enum Qty {
    Binary(u32, u8),
    Decimal(u64, u8),
    Exponent(u16, i8),
    Fraction(u16, u16, u8),
    Number(u64),
    Float(f64),
    Text(String),
    Null,
}

const BINARY: &[&str] = &["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
const DECIMAL: &[&str] = &["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];

impl Qty {
    fn to_json(&self) -> Value {
        match self {
            Qty::Binary(n, s) => json!(format!("{n}{}", BINARY[usize::from(*s) % BINARY.len()])),
            Qty::Decimal(n, s) => json!(format!("{n}{}", DECIMAL[usize::from(*s) % DECIMAL.len()])),
            Qty::Exponent(n, e) => json!(format!("{n}e{e}")),
            Qty::Fraction(a, b, s) => {
                json!(format!("{a}.{b}{}", BINARY[usize::from(*s) % BINARY.len()]))
            }
            Qty::Number(n) => json!(n),
            Qty::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Qty::Text(s) => json!(s),
            Qty::Null => Value::Null,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Resources {
    limit: Option<Qty>,
    request: Option<Qty>,
    cpu: bool,
    limits_shape: Option<Shape<()>>,
}

impl Resources {
    fn to_json(&self) -> Value {
        let mut resources = Map::new();
        let mut limits = Map::new();
        if let Some(q) = &self.limit {
            limits.insert("memory".into(), q.to_json());
        }
        if self.cpu {
            limits.insert("cpu".into(), json!("500m"));
        }
        if !limits.is_empty() {
            resources.insert("limits".into(), Value::Object(limits));
        }
        if let Some(q) = &self.request {
            resources.insert("requests".into(), json!({"memory": q.to_json()}));
        }
        if let Some(shape) = &self.limits_shape {
            let limits = resources.remove("limits").unwrap_or(json!({}));
            resources.insert("limits".into(), shape.to_json(|()| limits, json!([])));
        }
        Value::Object(resources)
    }
}

/// An env entry, often one the webhook cares about.
#[derive(Arbitrary, Debug)]
enum Env {
    GomemlimitValue(String),
    GomemlimitFromLimit { divisor: Option<String> },
    GomemlimitFromOther,
    GogcValue(String),
    Other(Name, String),
    NoName,
    NotAnObject(i32),
}

impl Env {
    fn to_json(&self) -> Value {
        match self {
            Env::GomemlimitValue(v) => json!({"name": "GOMEMLIMIT", "value": v}),
            Env::GomemlimitFromLimit { divisor } => {
                let mut field = json!({"resource": "limits.memory"});
                if let Some(d) = divisor {
                    field["divisor"] = json!(d);
                }
                json!({"name": "GOMEMLIMIT", "valueFrom": {"resourceFieldRef": field}})
            }
            Env::GomemlimitFromOther => json!({"name": "GOMEMLIMIT", "valueFrom":
                {"configMapKeyRef": {"name": "settings", "key": "limit"}}}),
            Env::GogcValue(v) => json!({"name": "GOGC", "value": v}),
            Env::Other(n, v) => json!({"name": n.text(), "value": v}),
            Env::NoName => json!({"value": "x"}),
            Env::NotAnObject(n) => json!(n),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Container {
    name: Name,
    resources: Option<Shape<Resources>>,
    env: Option<Shape<Vec<Env>>>,
    env_from: bool,
    /// Native sidecar (`restartPolicy: Always`), for init containers.
    sidecar: bool,
    resize_policy: Option<Vec<(bool, bool)>>,
    unknown_field: Option<i32>,
}

impl Container {
    fn to_json(&self, init: bool) -> Value {
        let mut c = json!({"name": self.name.text(), "image": "example.com/app:1"});
        if let Some(r) = &self.resources {
            c["resources"] = r.to_json(Resources::to_json, json!({}));
        }
        if let Some(env) = &self.env {
            c["env"] = env.to_json(|e| e.iter().map(Env::to_json).collect(), json!({}));
        }
        if self.env_from {
            c["envFrom"] = json!([{"configMapRef": {"name": "settings"}}]);
        }
        if init && self.sidecar {
            c["restartPolicy"] = json!("Always");
        }
        if let Some(policies) = &self.resize_policy {
            let entries = policies.iter().map(|(memory, restart)| {
                json!({
                    "resourceName": if *memory { "memory" } else { "cpu" },
                    "restartPolicy": if *restart { "RestartContainer" } else { "NotRequired" },
                })
            });
            c["resizePolicy"] = Value::Array(entries.collect());
        }
        if let Some(n) = self.unknown_field {
            c["fieldFromTheFuture"] = json!({"n": n});
        }
        c
    }
}

/// An annotation the webhook reads, with a value that may be wrong.
#[derive(Arbitrary, Debug)]
enum Annotation {
    Percent(String),
    PercentNumber(u8),
    Gogc(String),
    Exclude(Vec<Name>),
    Mode(String),
    Inject(String),
    Mirror,
    Status(String),
    StatusFor(Name, Option<Qty>, u8),
    Other(String, String),
    NotText(String, i32),
}

impl Annotation {
    fn insert(&self, annotations: &mut Map<String, Value>) {
        let (key, value) = match self {
            Annotation::Percent(v) => ("gomemlimit.io/percent".to_owned(), json!(v)),
            Annotation::PercentNumber(n) => ("gomemlimit.io/percent".to_owned(), json!(n.to_string())),
            Annotation::Gogc(v) => ("gomemlimit.io/gogc".to_owned(), json!(v)),
            Annotation::Exclude(names) => {
                let names: Vec<String> = names.iter().map(Name::text).collect();
                ("gomemlimit.io/exclude-containers".to_owned(), json!(names.join(",")))
            }
            Annotation::Mode(v) => ("gomemlimit.io/mode".to_owned(), json!(v)),
            Annotation::Inject(v) => ("gomemlimit.io/inject".to_owned(), json!(v)),
            Annotation::Mirror => ("kubernetes.io/config.mirror".to_owned(), json!("hash")),
            Annotation::Status(v) => ("gomemlimit.io/status".to_owned(), json!(v)),
            Annotation::StatusFor(name, limit, percent) => {
                let mut entry = json!({"gomemlimit": "1000000", "percent": percent, "gogc": "off"});
                if let Some(q) = limit {
                    entry["request"] = q.to_json();
                }
                let status = json!({"containers": {name.text(): entry}});
                ("gomemlimit.io/status".to_owned(), json!(status.to_string()))
            }
            Annotation::Other(k, v) => (k.clone(), json!(v)),
            Annotation::NotText(k, n) => (k.clone(), json!(n)),
        };
        annotations.insert(key, value);
    }
}

/// A pod: its containers, init containers, annotations and labels, pod-level resources.
#[derive(Arbitrary, Debug)]
struct Pod {
    generate_name: bool,
    labels_disabled: bool,
    annotations: Option<Shape<Vec<Annotation>>>,
    containers: Shape<Vec<Container>>,
    init_containers: Option<Shape<Vec<Container>>>,
    ephemeral: bool,
    pod_resources: Option<Resources>,
    restart_policy: Option<u8>,
    spec_shape: Option<Shape<()>>,
}

impl Pod {
    fn to_json(&self) -> Value {
        let mut metadata = json!({"namespace": "fuzz"});
        if self.generate_name {
            metadata["generateName"] = json!("fuzz-");
        } else {
            metadata["name"] = json!("fuzz");
        }
        if self.labels_disabled {
            metadata["labels"] = json!({"gomemlimit.io/inject": "disabled"});
        }
        if let Some(a) = &self.annotations {
            metadata["annotations"] = a.to_json(
                |list| {
                    let mut map = Map::new();
                    for annotation in list {
                        annotation.insert(&mut map);
                    }
                    Value::Object(map)
                },
                json!({}),
            );
        }
        let containers = |list: &Vec<Container>, init: bool| {
            Value::Array(list.iter().map(|c| c.to_json(init)).collect())
        };
        let mut spec = json!({
            "containers": self.containers.to_json(|l| containers(l, false), json!({})),
        });
        if let Some(init) = &self.init_containers {
            spec["initContainers"] = init.to_json(|l| containers(l, true), json!({}));
        }
        if self.ephemeral {
            spec["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox",
                "resources": {"limits": {"memory": "1Mi"}}}]);
        }
        if let Some(r) = &self.pod_resources {
            spec["resources"] = r.to_json();
        }
        if let Some(p) = self.restart_policy {
            spec["restartPolicy"] = json!(["Always", "OnFailure", "Never", ""][usize::from(p) % 4]);
        }
        let spec = match &self.spec_shape {
            Some(shape) => shape.to_json(|()| spec, json!([])),
            None => spec,
        };
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    }
}
