//! The one-pass reading of the usual pod CREATE answers every body exactly as reading it
//! into a document does: the same status, bytes, and report, on the fixtures and on
//! variants of them that a hand-written parser gets wrong (escaped and repeated keys,
//! fields of the wrong type, JSON a document refuses inside fields nobody reads).

pub mod support;

use gomemlimit_injector::admission::{Endpoint, Reading, handle_with};
use gomemlimit_injector::policy::{MissingLimit, Policy};
use support::fixture;

/// Asserts that both readings answer `body` alike, on both endpoints, for a few policies.
fn assert_alike(name: &str, body: &[u8]) {
    let policies = [
        Policy::default(),
        Policy {
            percent: 90,
            missing_limit: MissingLimit::Deny,
            ..Policy::default()
        },
    ];
    for endpoint in [Endpoint::Mutate, Endpoint::Audit] {
        for policy in &policies {
            let answer = |reading| {
                let (reply, report) =
                    handle_with(reading, endpoint, Some("application/json"), body, policy);
                (
                    reply.status,
                    reply.content_type,
                    reply.body,
                    format!("{report:?}"),
                )
            };
            let (one_pass, document) = (answer(Reading::OnePass), answer(Reading::Document));
            assert!(
                one_pass == document,
                "{name} ({endpoint:?}, percent {}): the readings differ:\n one pass: {}\n document: {}",
                policy.percent,
                String::from_utf8_lossy(&one_pass.2),
                String::from_utf8_lossy(&document.2),
            );
        }
    }
}

/// Every fixture, as stored.
#[test]
fn fixtures_are_answered_alike() {
    let data = format!("{}/tests/data", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for dir in [data.clone(), format!("{data}/wire")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                assert_alike(&path.display().to_string(), &std::fs::read(&path).unwrap());
                seen += 1;
            }
        }
    }
    assert!(seen >= 10, "only {seen} fixtures found in {data}");
}

/// `text` with the first `from` replaced by `to`; the variant must differ from the text.
fn variant(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the fixture");
    text.replacen(from, to, 1)
}

const OBJECT: &str = r#""object":{"#;

/// The usual CREATE as parsed, and compact as the API server sends it.
fn usual_create() -> (serde_json::Value, String) {
    let review: serde_json::Value = serde_json::from_slice(&fixture("pod-create.json")).unwrap();
    let compact = serde_json::to_string(&review).unwrap();
    (review, compact)
}

/// `compact` with a field named `junk` holding `value` at the start of the pod.
fn with_junk(compact: &str, value: &str) -> String {
    variant(compact, OBJECT, &format!("{OBJECT}\"junk\":{value},"))
}

/// The usual CREATE with one thing in the pod changed.
#[test]
fn variants_of_the_pod_are_answered_alike() {
    let (review, compact) = usual_create();
    let deep = format!("{}{}", "[".repeat(130), "]".repeat(130));
    let shallow = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let inside = |junk: &str| with_junk(&compact, junk);
    let variants = [
        ("compact", compact.clone()),
        ("pretty", serde_json::to_string_pretty(&review).unwrap()),
        (
            "escaped key",
            variant(&compact, r#""name":"#, r#""n\u0061me":"#),
        ),
        (
            "escaped value",
            compact.replace(r#""GOMEMLIMIT""#, r#""GOMEM\u004cIMIT""#),
        ),
        (
            "valueFrom null",
            compact.replace(r#""value":"#, r#""valueFrom":null,"value":"#),
        ),
        ("unpaired surrogate", inside(r#""\ud800""#)),
        ("reversed surrogates", inside(r#""\udc00\ud800""#)),
        ("nested past the limit", inside(&deep)),
        ("nested within the limit", inside(&shallow)),
        ("number out of range", inside("1e999")),
        ("big integer", inside("18446744073709551616")),
        ("control character", inside("\"\u{1}\"")),
        ("bad literal", inside("tru")),
    ];
    for (name, body) in &variants {
        assert_alike(name, body.as_bytes());
    }
    let mut invalid_utf8 = inside("\"x\"").into_bytes();
    let at = invalid_utf8.windows(3).position(|w| w == b"\"x\"").unwrap();
    invalid_utf8[at + 1] = 0xff;
    assert_alike("invalid UTF-8", &invalid_utf8);
}

/// The usual CREATE with one field of the pod sent twice: the last one counts.
#[test]
fn repeated_fields_of_the_pod_are_answered_alike() {
    let (_, compact) = usual_create();
    let variants = [
        (
            "repeated labels",
            variant(&compact, r#""labels":"#, r#""labels":5,"labels":"#),
        ),
        (
            "repeated memory",
            compact.replace(r#""memory":"#, r#""memory":{},"memory":"#),
        ),
        (
            "repeated env",
            compact.replace(r#""env":"#, r#""env":7,"env":"#),
        ),
        (
            "repeated spec",
            variant(&compact, r#""spec":"#, r#""spec":{},"spec":"#),
        ),
        (
            "repeated metadata",
            variant(&compact, r#""metadata":"#, r#""metadata":1,"metadata":"#),
        ),
        (
            "repeated annotation",
            variant(
                &compact,
                r#""annotations":{"#,
                r#""annotations":{"z":1,"y":[],"z":"s","#,
            ),
        ),
    ];
    for (name, body) in &variants {
        assert_alike(name, body.as_bytes());
    }
}

/// The usual CREATE with one thing around the pod changed.
#[test]
fn variants_of_the_envelope_are_answered_alike() {
    let (_, compact) = usual_create();
    let request = r#""request":{"#;
    let in_request = |field: &str| variant(&compact, request, &format!("{request}{field},"));
    let variants = [
        (
            "escaped uid",
            variant(&compact, r#""uid":""#, r#""uid":"\u0041"#),
        ),
        ("repeated uid", in_request(r#""uid":"first""#)),
        (
            "options",
            in_request(r#""options":{"kind":"CreateOptions","a":[1,{"b":null}]}"#),
        ),
        ("null request kind", in_request(r#""requestKind":null"#)),
        (
            "partial request kind",
            in_request(r#""requestKind":{"group":"","version":"v1"}"#),
        ),
        ("subresource", in_request(r#""subResource":"status""#)),
        ("old object", in_request(r#""oldObject":{}"#)),
        ("null old object", in_request(r#""oldObject":null"#)),
        ("null dryRun", in_request(r#""dryRun":null"#)),
        ("null name", in_request(r#""name":null"#)),
        ("unknown request field", in_request(r#""extra":1"#)),
    ];
    for (name, body) in &variants {
        assert_alike(name, body.as_bytes());
    }
}

/// The usual CREATE with the user, the document around the request, or its end changed.
#[test]
fn variants_around_the_request_are_answered_alike() {
    let (_, compact) = usual_create();
    let user = r#""userInfo":{"#;
    let variants = [
        (
            "groups and extra",
            variant(
                &compact,
                user,
                r#""userInfo":{"groups":["a","b\u00e9"],"extra":{"k":["v"]},"uid":"x","#,
            ),
        ),
        (
            "null extra value",
            variant(&compact, user, r#""userInfo":{"extra":{"k":null},"#),
        ),
        (
            "unknown user field",
            variant(&compact, user, r#""userInfo":{"other":1,"#),
        ),
        ("response", variant(&compact, "{", r#"{"response":null,"#)),
        (
            "repeated apiVersion",
            variant(&compact, "{", r#"{"apiVersion":"v1","#),
        ),
        ("trailing space", format!("{compact} \n")),
        ("trailing garbage", format!("{compact} x")),
        ("truncated", compact[..compact.len() / 2].to_owned()),
        (
            "not a pod",
            compact.replace(r#""kind":"Pod""#, r#""kind":"Secret""#),
        ),
        ("no object", compact.replace(OBJECT, r#""ignored":{"#)),
    ];
    for (name, body) in &variants {
        assert_alike(name, body.as_bytes());
    }
}
