//! The usual pod CREATE, read in one pass from the body: the envelope's fields are checked
//! as they are read, the pod is read into the engine's view of it, and nothing else is
//! kept.
//!
//! Only a body of the shape the API server sends is read here: exactly the fields of an
//! `admission.k8s.io/v1` AdmissionReview request, each once and of its type, operation
//! `CREATE` of the object itself, no `oldObject`, and kept strings without escapes.
//! Anything else, including every malformed body, is left to the full reading, which
//! answers it. What this reading accepts, the full reading accepts too, with the same
//! meaning: every value, kept or not, is read as a document of it would be.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::request::{API_VERSION, KIND};
use crate::engine::{Field, PodView, Skip};
use crate::json;

/// A pod CREATE as the API server sends it.
#[derive(Default)]
pub(super) struct Create<'a> {
    pub(super) uid: &'a str,
    /// `kind` is core Pod and `resource` is `pods`.
    pub(super) is_pod: bool,
    pub(super) name: &'a str,
    pub(super) namespace: Option<&'a str>,
    pub(super) username: Option<&'a str>,
    pub(super) dry_run: bool,
    pub(super) object: Field<PodView<'a>>,
}

/// The request in `body`, when the body is an AdmissionReview of the usual shape for a
/// CREATE; `None` for anything else.
pub(super) fn read(body: &[u8]) -> Option<Create<'_>> {
    // Checked once here, the text is not checked again string by string.
    let text = simdutf8::basic::from_utf8(body).ok()?;
    let mut deserializer = json::Deserializer::new(text);
    let create = Seed::<Review<'_>>::new()
        .deserialize(&mut deserializer)
        .ok()?;
    deserializer.end().ok()?;
    Some(create)
}

/// Not the usual shape: the full reading takes over.
fn unusual<E: de::Error>() -> E {
    E::custom("not the usual AdmissionReview")
}

/// What a JSON object is read into, field by field.
trait Fields<'de>: Default {
    /// The fields it may have, each at most once.
    const NAMES: &'static [&'static str];
    type Output;

    /// Reads the value of `name`, one of [`Fields::NAMES`].
    fn read<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error>;

    /// The result once every field is read; `None` when a required one is missing or a
    /// value is not the usual one.
    fn finish(self) -> Option<Self::Output>;
}

/// Reads a JSON object of fields `T`.
struct Seed<T>(PhantomData<T>);

impl<T> Seed<T> {
    fn new() -> Self {
        Seed(PhantomData)
    }
}

impl<'de, T: Fields<'de>> DeserializeSeed<'de> for Seed<T> {
    type Value = T::Output;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T::Output, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Fields<'de>> Visitor<'de> for Seed<T> {
    type Value = T::Output;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T::Output, A::Error> {
        let mut fields = T::default();
        let mut seen = 0u32;
        while let Some(key) = map.next_key::<&'de str>()? {
            let index = T::NAMES
                .iter()
                .position(|name| *name == key)
                .ok_or_else(unusual)?;
            if seen & (1 << index) != 0 {
                return Err(unusual());
            }
            seen |= 1 << index;
            fields.read(key, &mut map)?;
        }
        fields.finish().ok_or_else(unusual)
    }
}

/// Reads a JSON object of fields `T`, or null.
struct OrNull<T>(PhantomData<T>);

impl<'de, T: Fields<'de>> DeserializeSeed<'de> for OrNull<T> {
    type Value = Option<T::Output>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, T: Fields<'de>> Visitor<'de> for OrNull<T> {
    type Value = Option<T::Output>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Seed::<T>::new().deserialize(d).map(Some)
    }
}

/// The value of the current field, an object of fields `T`.
fn object<'de, T: Fields<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<T::Output, A::Error> {
    map.next_value_seed(Seed::<T>::new())
}

/// The value of the current field, an object of fields `T` or null.
fn object_or_null<'de, T: Fields<'de>, A: MapAccess<'de>>(
    map: &mut A,
) -> Result<Option<T::Output>, A::Error> {
    map.next_value_seed(OrNull::<T>(PhantomData))
}

/// The AdmissionReview.
#[derive(Default)]
struct Review<'a> {
    api_version: bool,
    kind: bool,
    request: Option<Create<'a>>,
}

impl<'de> Fields<'de> for Review<'de> {
    const NAMES: &'static [&'static str] = &["apiVersion", "kind", "request"];
    type Output = Create<'de>;

    fn read<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "apiVersion" => self.api_version = map.next_value::<&str>()? == API_VERSION,
            "kind" => self.kind = map.next_value::<&str>()? == KIND,
            _ => self.request = Some(object::<Request<'de>, A>(map)?),
        }
        Ok(())
    }

    fn finish(self) -> Option<Create<'de>> {
        self.request.filter(|_| self.api_version && self.kind)
    }
}

/// The request: every field of an `admission.k8s.io/v1` AdmissionRequest.
#[derive(Default)]
struct Request<'a> {
    create: Create<'a>,
    uid: bool,
    kind: Option<(&'a str, &'a str)>,
    resource: Option<&'a str>,
    create_operation: bool,
    user_info: bool,
}

impl<'de> Fields<'de> for Request<'de> {
    const NAMES: &'static [&'static str] = &[
        "uid",
        "kind",
        "resource",
        "subResource",
        "requestKind",
        "requestResource",
        "requestSubResource",
        "name",
        "namespace",
        "operation",
        "userInfo",
        "object",
        "oldObject",
        "dryRun",
        "options",
    ];
    type Output = Create<'de>;

    fn read<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        let create = &mut self.create;
        match name {
            "uid" => {
                create.uid = map.next_value()?;
                self.uid = !create.uid.is_empty();
            }
            "kind" => self.kind = Some(object::<Gvk<'de>, A>(map)?),
            "resource" => self.resource = Some(object::<Gvr<'de>, A>(map)?),
            // A subresource is not the object itself.
            "subResource" => map.next_value::<Null>().map(drop)?,
            "requestKind" => object_or_null::<Gvk<'de>, A>(map).map(drop)?,
            "requestResource" => object_or_null::<Gvr<'de>, A>(map).map(drop)?,
            "requestSubResource" => map.next_value::<Option<AnyString>>().map(drop)?,
            "name" => create.name = map.next_value()?,
            "namespace" => create.namespace = map.next_value()?,
            "operation" => self.create_operation = map.next_value::<&str>()? == "CREATE",
            "userInfo" => {
                create.username = object::<UserInfo<'de>, A>(map)?;
                self.user_info = true;
            }
            "object" => create.object = map.next_value()?,
            "oldObject" => map.next_value::<Null>().map(drop)?,
            "dryRun" => create.dry_run = map.next_value()?,
            // Any JSON: the options of the operation.
            _ => map.next_value::<Skip>().map(drop)?,
        }
        Ok(())
    }

    fn finish(self) -> Option<Create<'de>> {
        let (group, kind) = self.kind?;
        let resource = self.resource?;
        if !(self.uid && self.create_operation && self.user_info) {
            return None;
        }
        let mut create = self.create;
        create.is_pod = group.is_empty() && kind == "Pod" && resource == "pods";
        Some(create)
    }
}

/// A GroupVersionKind: its group and kind.
#[derive(Default)]
struct Gvk<'a> {
    group: Option<&'a str>,
    version: bool,
    kind: Option<&'a str>,
}

impl<'de> Fields<'de> for Gvk<'de> {
    const NAMES: &'static [&'static str] = &["group", "version", "kind"];
    type Output = (&'de str, &'de str);

    fn read<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "group" => self.group = Some(map.next_value()?),
            "version" => {
                map.next_value::<AnyString>()?;
                self.version = true;
            }
            _ => self.kind = Some(map.next_value()?),
        }
        Ok(())
    }

    fn finish(self) -> Option<Self::Output> {
        Some((self.group?, self.kind.filter(|_| self.version)?))
    }
}

/// A GroupVersionResource: its resource.
#[derive(Default)]
struct Gvr<'a> {
    group: bool,
    version: bool,
    resource: Option<&'a str>,
}

impl<'de> Fields<'de> for Gvr<'de> {
    const NAMES: &'static [&'static str] = &["group", "version", "resource"];
    type Output = &'de str;

    fn read<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "group" => {
                map.next_value::<AnyString>()?;
                self.group = true;
            }
            "version" => {
                map.next_value::<AnyString>()?;
                self.version = true;
            }
            _ => self.resource = Some(map.next_value()?),
        }
        Ok(())
    }

    fn finish(self) -> Option<&'de str> {
        self.resource.filter(|_| self.group && self.version)
    }
}

/// `userInfo`: its username.
#[derive(Default)]
struct UserInfo<'a> {
    username: Option<&'a str>,
}

impl<'de> Fields<'de> for UserInfo<'de> {
    const NAMES: &'static [&'static str] = &["username", "uid", "groups", "extra"];
    type Output = Option<&'de str>;

    fn read<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "username" => self.username = map.next_value()?,
            "uid" => map.next_value::<Option<AnyString>>().map(drop)?,
            "groups" => map.next_value::<Option<Strings>>().map(drop)?,
            _ => map.next_value::<Option<Extra>>().map(drop)?,
        }
        Ok(())
    }

    fn finish(self) -> Option<Option<&'de str>> {
        Some(self.username)
    }
}

/// A string, escaped or not, not kept.
struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringVisitor;
        impl Visitor<'_> for StringVisitor {
            type Value = AnyString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
        }
        deserializer.deserialize_str(StringVisitor)
    }
}

/// A list of strings, not kept.
struct Strings;

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringsVisitor;
        impl<'de> Visitor<'de> for StringsVisitor {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                while seq.next_element::<AnyString>()?.is_some() {}
                Ok(Strings)
            }
        }
        deserializer.deserialize_seq(StringsVisitor)
    }
}

/// `userInfo.extra`: lists of strings by name, not kept.
struct Extra;

impl<'de> Deserialize<'de> for Extra {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExtraVisitor;
        impl<'de> Visitor<'de> for ExtraVisitor {
            type Value = Extra;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("lists of strings by name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Extra, A::Error> {
                while map.next_entry::<AnyString, Strings>()?.is_some() {}
                Ok(Extra)
            }
        }
        deserializer.deserialize_map(ExtraVisitor)
    }
}

/// Only null.
struct Null;

impl<'de> Deserialize<'de> for Null {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NullVisitor;
        impl Visitor<'_> for NullVisitor {
            type Value = Null;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("null")
            }
            fn visit_none<E>(self) -> Result<Null, E> {
                Ok(Null)
            }
            fn visit_unit<E>(self) -> Result<Null, E> {
                Ok(Null)
            }
        }
        deserializer.deserialize_option(NullVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_usual_create_is_read_in_one_pass() {
        for name in [
            "pod-create.json",
            "pod-create-compliant.json",
            "pod-create-dryrun.json",
            "pod-create-invalid-annotation.json",
            "wire/pod-create.json",
        ] {
            let body = fixture(name);
            let create = read(&body).unwrap_or_else(|| panic!("{name} is not read in one pass"));
            assert!(create.is_pod, "{name}");
            assert!(!create.uid.is_empty(), "{name}");
            assert!(matches!(create.object, Field::Present(_)), "{name}");
        }
        let body = fixture("pod-create-dryrun.json");
        assert!(read(&body).unwrap().dry_run);
        let body = fixture("configmap-create.json");
        assert!(!read(&body).expect("a ConfigMap CREATE").is_pod);
    }

    #[test]
    fn anything_else_is_left_to_the_document() {
        for name in [
            "pod-update.json",
            "pod-binding-create.json",
            "wire/malformed.json",
            "wire/missing-request.json",
            "wire/missing-uid.json",
            "wire/v1beta1.json",
        ] {
            assert!(
                read(&fixture(name)).is_none(),
                "{name} was read in one pass"
            );
        }
    }
}
