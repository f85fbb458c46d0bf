//! YAML streams as users write them: split into documents with every byte kept (so that
//! untouched documents are printed exactly as they came), each parsed with errors that
//! name the line in the file, and memory quantities written as YAML numbers (`1e9`) kept
//! as written instead of becoming floats (`1000000000.0`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// One YAML document as written, with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chunk {
    /// The separator that opened it (`---` and what follows it on the line when that is
    /// only a comment), if any.
    pub(super) separator: String,
    /// Everything after the separator up to the next one. A document that starts on the
    /// separator line (`--- {kind: Pod, …}`) starts its body there.
    pub(super) body: String,
    /// The line of the file the body starts on.
    pub(super) line: usize,
}

/// Splits a YAML stream on `---` lines, keeping every byte.
pub(super) fn split(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = Chunk {
        separator: String::new(),
        body: String::new(),
        line: 1,
    };
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let Some(rest) = separator_rest(line) else {
            current.body.push_str(line);
            continue;
        };
        if !current.separator.is_empty() || !current.body.is_empty() {
            chunks.push(current);
        }
        let content = rest.trim_start();
        current = if content.trim_end().is_empty() || content.starts_with('#') {
            Chunk {
                separator: line.to_owned(),
                body: String::new(),
                line: i + 2,
            }
        } else {
            // The document starts on this line: its content belongs to the body.
            let at = line.len() - rest.len() + (rest.len() - content.len());
            Chunk {
                separator: line[..at].to_owned(),
                body: line[at..].to_owned(),
                line: i + 1,
            }
        };
    }
    if !current.separator.is_empty() || !current.body.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// What follows `---` on a document separator line, or `None` for any other line.
fn separator_rest(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("---")?;
    (rest.is_empty() || rest.starts_with([' ', '\t', '\n', '\r'])).then_some(rest)
}

/// Whether a document holds nothing but comments and blank lines.
pub(super) fn is_blank(body: &str) -> bool {
    body.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

/// Why a document could not be read, with the place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParseError {
    /// 1-based line and column in the file, when the parser knows them.
    pub(super) at: Option<(u64, u64)>,
    pub(super) message: String,
}

/// Parses one document. Lines in errors are lines of the file: the body is parsed as if
/// it stood at `chunk.line`.
pub(super) fn parse(chunk: &Chunk) -> Result<Value, ParseError> {
    let mut text = "\n".repeat(chunk.line.saturating_sub(1));
    text.push_str(&chunk.body);
    let node: Spanned<Node> = serde_saphyr::from_str(&text).map_err(|e| {
        let at = e.location().map(|l| (l.line(), l.column()));
        ParseError {
            at: at.filter(|(line, _)| *line > 0),
            message: without_location(&e.to_string()),
        }
    })?;
    Ok(node.value.into_value(&text, &mut Vec::new()))
}

/// Parses a whole text as one document.
pub(super) fn parse_text(text: &str) -> Result<Value, ParseError> {
    parse(&Chunk {
        separator: String::new(),
        body: text.to_owned(),
        line: 1,
    })
}

/// The first line of a parser message, without the location the caller gives anyway.
fn without_location(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.strip_prefix("line ") {
        Some(rest) => rest
            .split_once(": ")
            .map_or(first, |(_, message)| message)
            .to_owned(),
        None => first.to_owned(),
    }
}

/// A YAML node, with the place of every child in the text so that a number can be read
/// back as written.
enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(String, Spanned<Node>)>),
}

impl Node {
    /// The node as JSON. A number written as the memory of a resource list
    /// (`resources.limits.memory: 1e9`) becomes its text, as the API server reads it:
    /// a quantity, not a float.
    fn into_value(self, text: &str, path: &mut Vec<String>) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Number(n) => Value::Number(n),
            Node::String(s) => Value::String(s),
            Node::Seq(items) => Value::Array(
                items
                    .into_iter()
                    .map(|item| item.value.into_value(text, path))
                    .collect(),
            ),
            Node::Map(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (key, node) in entries {
                    let value = match (&node.value, is_memory(path, &key)) {
                        (Node::Number(_), true) => source(text, &node)
                            .map_or_else(|| node.value.into_value(text, path), Value::String),
                        _ => {
                            path.push(key.clone());
                            let value = node.value.into_value(text, path);
                            path.pop();
                            value
                        }
                    };
                    map.insert(key, value);
                }
                Value::Object(map)
            }
        }
    }
}

/// Whether `key` under `path` is the memory of a resource list (`…resources.limits`).
fn is_memory(path: &[String], key: &str) -> bool {
    key == "memory"
        && matches!(path, [.., resources, list]
            if resources == "resources" && (list == "limits" || list == "requests"))
}

/// The text a scalar node was written as.
fn source(text: &str, node: &Spanned<Node>) -> Option<String> {
    let span = node.referenced.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let written = text.get(start..start + len)?.trim();
    (!written.is_empty()).then(|| written.to_owned())
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
        Ok(Node::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
        Ok(Node::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Node, E> {
        Number::from_f64(n)
            .map(Node::Number)
            .ok_or_else(|| E::custom(format!("{n} is not a JSON number")))
    }

    fn visit_str<E>(self, s: &str) -> Result<Node, E> {
        Ok(Node::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Node, E> {
        Ok(Node::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Spanned<Node>)> = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let key = match key {
                Node::String(s) => s,
                Node::Number(n) => n.to_string(),
                Node::Bool(b) => b.to_string(),
                Node::Null => "null".to_owned(),
                Node::Seq(_) | Node::Map(_) => {
                    return Err(de::Error::custom("a mapping key must be a scalar"));
                }
            };
            let value = map.next_value::<Spanned<Node>>()?;
            // As in JSON, a repeated key keeps its last value.
            entries.retain(|(k, _)| *k != key);
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_keeping_every_byte() {
        let text = "# head\napiVersion: v1\n---\nkind: A\n--- # note\nkind: B\n...\n";
        let chunks = split(text);
        let joined: String = chunks
            .iter()
            .map(|c| format!("{}{}", c.separator, c.body))
            .collect();
        assert_eq!(joined, text);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].line, 4);
        assert_eq!(chunks[2].separator, "--- # note\n");
    }

    #[test]
    fn a_document_may_start_on_its_separator_line() {
        let text = "--- {kind: Pod}\n--- kind: Pod\nspec: {}\n---\n";
        let chunks = split(text);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].separator, "--- ");
        assert_eq!(chunks[0].body, "{kind: Pod}\n");
        assert_eq!(chunks[0].line, 1);
        assert_eq!(chunks[1].body, "kind: Pod\nspec: {}\n");
        assert_eq!(chunks[1].line, 2);
        let joined: String = chunks
            .iter()
            .map(|c| format!("{}{}", c.separator, c.body))
            .collect();
        assert_eq!(joined, text);
        assert_eq!(parse(&chunks[0]).unwrap(), json!({"kind": "Pod"}));
    }

    #[test]
    fn errors_name_the_line_in_the_file() {
        let text = "kind: A\n---\nkind: B\nmetadata:\n  name: [b\n";
        let chunks = split(text);
        let error = parse(&chunks[1]).unwrap_err();
        assert_eq!(error.at.map(|(line, _)| line), Some(5), "{error:?}");
        assert!(!error.message.contains("line"), "{}", error.message);
    }

    #[test]
    fn memory_written_as_a_number_stays_as_written() {
        let text = "spec:\n  replicas: 3\n  resources:\n    limits: {memory: 1e9, cpu: 1.5}\n    requests:\n      memory: 512\n";
        let value = parse(&split(text)[0]).unwrap();
        assert_eq!(value["spec"]["resources"]["limits"]["memory"], "1e9");
        assert_eq!(value["spec"]["resources"]["requests"]["memory"], "512");
        // Other numbers stay numbers.
        assert_eq!(value["spec"]["replicas"], 3);
        assert_eq!(value["spec"]["resources"]["limits"]["cpu"], 1.5);
    }
}
