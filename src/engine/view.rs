//! The pod as sent, read straight from the request's bytes (or from a `serde_json::Value`)
//! into views of what the rules look at: names, labels, annotations, and per container the
//! memory requests and limits, the env entries that set GOMEMLIMIT or GOGC (their value
//! or whether they have a `valueFrom`), `envFrom`, `restartPolicy` and `resizePolicy`.
//! Everything else is skipped as it is read, without being kept; strings without escapes
//! are borrowed, not copied.
//!
//! What is skipped is still read in full, as a document of the pod would be: a body the
//! views accept is one `serde_json::Value` accepts too.
//!
//! A field of the wrong kind (an object where a string belongs, …) is not an error here:
//! it reads as [`Field::Wrong`], so that the rules decide, as they do for every shape, what
//! they can read and what makes the pod unreadable.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A string as sent: borrowed from the body when it holds no escape.
pub(crate) type Str<'a> = Cow<'a, str>;

/// A field as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Field<T> {
    #[default]
    Absent,
    Null,
    /// Of the expected kind.
    Present(T),
    /// Of another kind.
    Wrong,
}

impl<T> Field<T> {
    pub(crate) fn present(&self) -> Option<&T> {
        match self {
            Field::Present(value) => Some(value),
            _ => None,
        }
    }

    /// Absent or null: as if it were not there.
    pub(crate) fn is_missing(&self) -> bool {
        matches!(self, Field::Absent | Field::Null)
    }
}

/// What a value of the expected kind is read from. Every other kind of JSON value reads as
/// [`Field::Wrong`], skipped.
pub(crate) trait Shape<'de>: Sized {
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(None)
    }

    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(None)
    }

    fn string(_: Str<'de>) -> Option<Self> {
        None
    }

    /// A JSON number, as `serde_json::Number` writes it.
    fn number(_: String) -> Option<Self> {
        None
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<T>(PhantomData<T>);

impl<T> FieldVisitor<T> {
    fn found(value: Option<T>) -> Field<T> {
        value.map_or(Field::Wrong, Field::Present)
    }
}

impl<'de, T: Shape<'de>> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Field<T>, E> {
        Ok(Field::Null)
    }

    fn visit_none<E>(self) -> Result<Field<T>, E> {
        Ok(Field::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Field<T>, D::Error> {
        Field::deserialize(d)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Field<T>, E> {
        Ok(Field::Wrong)
    }

    fn visit_u64<E>(self, n: u64) -> Result<Field<T>, E> {
        Ok(Self::found(T::number(n.to_string())))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Field<T>, E> {
        Ok(Self::found(T::number(n.to_string())))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Field<T>, E> {
        let text = serde_json::Number::from_f64(n).map(|n| n.to_string());
        Ok(text.map_or(Field::Wrong, |t| Self::found(T::number(t))))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Field<T>, E> {
        Ok(Self::found(T::string(Cow::Borrowed(s))))
    }

    fn visit_str<E>(self, s: &str) -> Result<Field<T>, E> {
        Ok(Self::found(T::string(Cow::Owned(s.to_owned()))))
    }

    fn visit_string<E>(self, s: String) -> Result<Field<T>, E> {
        Ok(Self::found(T::string(Cow::Owned(s))))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<T>, A::Error> {
        T::map(map).map(Self::found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<T>, A::Error> {
        T::seq(seq).map(Self::found)
    }
}

/// Any JSON value, dropped. Read from the request's text (`crate::json`), it is checked in
/// full where it lies, as a document's reading checks it: its strings, its numbers and its
/// nesting.
pub(crate) struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_ignored_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
        Skip::deserialize(d)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// A map key, borrowed when it can be.
pub(crate) struct Key<'a>(pub(crate) Str<'a>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads the entries of a map, handing each key with the map to `field`, which reads (or
/// skips) the value.
pub(crate) fn entries<'de, A, F>(mut map: A, mut field: F) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    F: FnMut(&str, &mut A) -> Result<(), A::Error>,
{
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        field(&key, &mut map)?;
    }
    Ok(())
}

/// Skips the value of the current entry.
pub(crate) fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<Skip>().map(drop)
}

impl<'de> Shape<'de> for Str<'de> {
    fn string(s: Str<'de>) -> Option<Self> {
        Some(s)
    }
}

/// The value of a string field, or `None` for anything else.
fn string<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Str<'de>>, A::Error> {
    Ok(match map.next_value::<Field<Str<'de>>>()? {
        Field::Present(s) => Some(s),
        _ => None,
    })
}

/// The pod.
#[derive(Debug, Default)]
pub(crate) struct Pod<'a> {
    pub(crate) metadata: Field<Metadata<'a>>,
    pub(crate) spec: Field<Spec<'a>>,
}

impl<'de> Shape<'de> for Pod<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut pod = Pod::default();
        entries(map, |key, map| {
            match key {
                "metadata" => pod.metadata = map.next_value()?,
                "spec" => pod.spec = map.next_value()?,
                _ => skip(map)?,
            }
            Ok(())
        })?;
        Ok(Some(pod))
    }
}

/// `metadata`.
#[derive(Debug, Default)]
pub(crate) struct Metadata<'a> {
    pub(crate) generate_name: Option<Str<'a>>,
    pub(crate) labels: Field<StringMap<'a>>,
    pub(crate) annotations: Field<StringMap<'a>>,
}

impl<'de> Shape<'de> for Metadata<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut metadata = Metadata::default();
        entries(map, |key, map| {
            match key {
                "generateName" => metadata.generate_name = string(map)?,
                "labels" => metadata.labels = map.next_value()?,
                "annotations" => metadata.annotations = map.next_value()?,
                _ => skip(map)?,
            }
            Ok(())
        })?;
        Ok(Some(metadata))
    }
}

/// Labels or annotations: the entries whose value is a string, and the first key (in the
/// order first sent) whose value is not. A key sent twice keeps its last value, as a JSON
/// object read into a map does.
#[derive(Debug, Default)]
pub(crate) struct StringMap<'a> {
    /// Each key's value (`None` when not a string) and the position it was first sent at.
    values: BTreeMap<Str<'a>, (usize, Option<Str<'a>>)>,
}

impl<'a> StringMap<'a> {
    /// The value of `key`, when it is a string.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).and_then(|(_, v)| v.as_deref())
    }

    /// The first key, in the order sent, whose value is not a string.
    pub(crate) fn not_a_string(&self) -> Option<&str> {
        self.values
            .iter()
            .filter(|(_, (_, v))| v.is_none())
            .min_by_key(|(_, (at, _))| *at)
            .map(|(k, _)| k.as_ref())
    }
}

impl<'de> Shape<'de> for StringMap<'de> {
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let mut out = StringMap::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value = map.next_value::<Field<Str<'de>>>()?;
            let value = match value {
                Field::Present(value) => Some(value),
                _ => None,
            };
            let at = out.values.len();
            out.values
                .entry(key)
                .and_modify(|entry| entry.1 = value.clone())
                .or_insert((at, value));
        }
        Ok(Some(out))
    }
}

/// `spec`.
#[derive(Debug, Default)]
pub(crate) struct Spec<'a> {
    pub(crate) resources: Field<Resources<'a>>,
    pub(crate) init_containers: Field<Vec<Field<Container<'a>>>>,
    pub(crate) containers: Field<Vec<Field<Container<'a>>>>,
    pub(crate) restart_policy: Option<Str<'a>>,
}

impl<'de> Shape<'de> for Spec<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut spec = Spec::default();
        entries(map, |key, map| {
            match key {
                "resources" => spec.resources = map.next_value()?,
                "initContainers" => spec.init_containers = map.next_value()?,
                "containers" => spec.containers = map.next_value()?,
                "restartPolicy" => spec.restart_policy = string(map)?,
                _ => skip(map)?,
            }
            Ok(())
        })?;
        Ok(Some(spec))
    }
}

/// A list whose items are kept in order, whatever their kind.
impl<'de, T: Shape<'de>> Shape<'de> for Vec<Field<T>> {
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<Field<T>>()? {
            items.push(item);
        }
        Ok(Some(items))
    }
}

/// One container.
#[derive(Debug, Default)]
pub(crate) struct Container<'a> {
    pub(crate) name: Option<Str<'a>>,
    pub(crate) resources: Field<Resources<'a>>,
    pub(crate) restart_policy: Option<Str<'a>>,
    pub(crate) resize_policy: Field<Vec<Field<ResizePolicy<'a>>>>,
    pub(crate) env: Field<Env<'a>>,
    pub(crate) env_from: Field<Count>,
}

impl<'de> Shape<'de> for Container<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut c = Container::default();
        entries(map, |key, map| {
            match key {
                "name" => c.name = string(map)?,
                "resources" => c.resources = map.next_value()?,
                "restartPolicy" => c.restart_policy = string(map)?,
                "resizePolicy" => c.resize_policy = map.next_value()?,
                "env" => c.env = map.next_value()?,
                "envFrom" => c.env_from = map.next_value()?,
                _ => skip(map)?,
            }
            Ok(())
        })?;
        Ok(Some(c))
    }
}

/// `resources`.
#[derive(Debug, Default)]
pub(crate) struct Resources<'a> {
    pub(crate) limits: Field<ResourceList<'a>>,
    pub(crate) requests: Field<ResourceList<'a>>,
}

impl<'de> Shape<'de> for Resources<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut r = Resources::default();
        entries(map, |key, map| {
            match key {
                "limits" => r.limits = map.next_value()?,
                "requests" => r.requests = map.next_value()?,
                _ => skip(map)?,
            }
            Ok(())
        })?;
        Ok(Some(r))
    }
}

/// `limits` or `requests`: the memory quantity, as written.
#[derive(Debug, Default)]
pub(crate) struct ResourceList<'a> {
    pub(crate) memory: Field<QuantityText<'a>>,
}

impl<'de> Shape<'de> for ResourceList<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut list = ResourceList::default();
        entries(map, |key, map| {
            match key {
                "memory" => list.memory = map.next_value()?,
                _ => skip(map)?,
            }
            Ok(())
        })?;
        Ok(Some(list))
    }
}

/// A quantity as written: a string, or a JSON number in its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuantityText<'a>(pub(crate) Str<'a>);

impl<'de> Shape<'de> for QuantityText<'de> {
    fn string(s: Str<'de>) -> Option<Self> {
        Some(QuantityText(s))
    }

    fn number(text: String) -> Option<Self> {
        Some(QuantityText(Cow::Owned(text)))
    }
}

/// One `resizePolicy` entry: its strings.
#[derive(Debug, Default)]
pub(crate) struct ResizePolicy<'a> {
    pub(crate) resource_name: Option<Str<'a>>,
    pub(crate) restart_policy: Option<Str<'a>>,
}

impl<'de> Shape<'de> for ResizePolicy<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut p = ResizePolicy::default();
        entries(map, |key, map| {
            match key {
                "resourceName" => p.resource_name = string(map)?,
                "restartPolicy" => p.restart_policy = string(map)?,
                _ => skip(map)?,
            }
            Ok(())
        })?;
        Ok(Some(p))
    }
}

/// The Go runtime's variables the webhook sets.
pub(crate) const GOMEMLIMIT: &str = "GOMEMLIMIT";
pub(crate) const GOGC: &str = "GOGC";

/// `env`: the entries named [`GOMEMLIMIT`] or [`GOGC`], with their index; the others are
/// read and skipped.
#[derive(Debug, Default)]
pub(crate) struct Env<'a> {
    pub(crate) watched: Vec<(usize, EnvVar<'a>)>,
}

impl<'de> Shape<'de> for Env<'de> {
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut env = Env::default();
        let mut index = 0;
        while let Some(item) = seq.next_element::<Field<EnvVar<'de>>>()? {
            if let Field::Present(var) = item
                && matches!(var.name.as_deref(), Some(GOMEMLIMIT | GOGC))
            {
                env.watched.push((index, var));
            }
            index += 1;
        }
        Ok(Some(env))
    }
}

/// One `env` entry: its name, its value when that is a string, and whether it has a
/// `valueFrom` key at all.
#[derive(Debug, Default)]
pub(crate) struct EnvVar<'a> {
    pub(crate) name: Option<Str<'a>>,
    pub(crate) value: Option<Str<'a>>,
    pub(crate) has_value_from: bool,
}

impl<'de> Shape<'de> for EnvVar<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut var = EnvVar::default();
        entries(map, |key, map| {
            match key {
                "name" => var.name = string(map)?,
                "value" => var.value = string(map)?,
                "valueFrom" => {
                    var.has_value_from = true;
                    skip(map)?;
                }
                _ => skip(map)?,
            }
            Ok(())
        })?;
        Ok(Some(var))
    }
}

/// How many items a list has.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Count(pub(crate) usize);

impl<'de> Shape<'de> for Count {
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut n = 0;
        while seq.next_element::<Skip>()?.is_some() {
            n += 1;
        }
        Ok(Some(Count(n)))
    }
}

/// The pod in a `serde_json::Value`, borrowing its strings.
pub(crate) fn of_value(value: &serde_json::Value) -> Field<Pod<'_>> {
    // Reading a Value cannot fail: every field is lenient.
    Field::deserialize(value).unwrap_or(Field::Wrong)
}
