//! `mutate` and `audit -f` through the real binary: golden files for every workload kind,
//! `List` and multi-document input, errors that name their cause, and the same answer as
//! the webhook's HTTPS path.

pub mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gomemlimit-injector");

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/manifests")
}

/// Runs the binary with `args`, feeding `stdin` when given.
fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Compares `actual` with the golden file, or rewrites it when `UPDATE_GOLDEN=1`.
fn golden(name: &str, actual: &str) {
    let path = manifests().join("golden").join(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

fn inputs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(manifests())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            (name.ends_with(".yaml") || name.ends_with(".json")).then_some(name)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn mutate_and_audit_match_their_golden_files() {
    let names = inputs();
    for kind in [
        "pod",
        "deployment",
        "statefulset",
        "daemonset",
        "replicaset",
        "replicationcontroller",
        "job",
        "cronjob",
        "list",
        "multi",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(kind)),
            "no {kind} fixture"
        );
    }
    for name in &names {
        let path = manifests().join(name);
        let path = path.to_str().unwrap();
        let mutated = run(&["mutate", "-f", path], None);
        assert!(
            mutated.status.success(),
            "{name}: {}",
            text(&mutated.stderr)
        );
        golden(&format!("{name}.mutated"), &text(&mutated.stdout));

        let audit = run(&["audit", "-f", path, "-o", "json"], None);
        golden(&format!("{name}.audit.json"), &text(&audit.stdout));
        let report: Value = serde_json::from_slice(&audit.stdout).unwrap();
        let would = report["summary"]["wouldChange"].as_u64().unwrap();
        assert_eq!(
            audit.status.code(),
            Some(if would > 0 { 1 } else { 0 }),
            "{name}"
        );

        let table = run(&["audit", "-f", path], None);
        golden(&format!("{name}.audit.txt"), &text(&table.stdout));
    }
}

#[test]
fn mutated_manifests_are_a_fixed_point() {
    for name in inputs() {
        let path = manifests().join(&name);
        let first = run(&["mutate", "-f", path.to_str().unwrap()], None);
        let second = run(&["mutate", "-f", "-"], Some(&first.stdout));
        assert!(second.status.success(), "{name}: {}", text(&second.stderr));
        assert_eq!(text(&second.stdout), text(&first.stdout), "{name}");
        let audit = run(&["audit", "-f", "-"], Some(&first.stdout));
        assert_eq!(
            audit.status.code(),
            Some(0),
            "{name}: {}",
            text(&audit.stdout)
        );
    }
}

#[test]
fn untouched_documents_keep_comments_and_order() {
    let path = manifests().join("multi.yaml");
    let input = std::fs::read_to_string(&path).unwrap();
    let out = text(&run(&["mutate", "-f", path.to_str().unwrap()], None).stdout);
    for kept in [
        "# Several documents: only the workloads change; everything else is kept as written.\n",
        "  name: shop   # the shop\n",
        "metadata: {name: settings, namespace: shop}\n",
        "# Already compliant: left exactly as written.\n",
        "      env: [{name: GOMEMLIMIT, value: \"100MiB\"}]\n",
        "  labels: {gomemlimit.io/inject: disabled}\n",
        "# The storefront\n",
    ] {
        assert!(input.contains(kept) && out.contains(kept), "lost {kept:?}");
    }
    let order = |s: &str| -> Vec<usize> {
        [
            "kind: Namespace",
            "kind: ConfigMap",
            "kind: Deployment",
            "name: compliant",
            "name: opted-out",
        ]
        .iter()
        .map(|k| s.find(k).unwrap())
        .collect()
    };
    let positions = order(&out);
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}

#[test]
fn diff_shows_only_the_changes() {
    let path = manifests().join("pod.yaml");
    let out = run(&["mutate", "--diff", "-f", path.to_str().unwrap()], None);
    let diff = text(&out.stdout);
    assert!(diff.starts_with("--- a/"), "{diff}");
    assert!(
        diff.contains("+          memory: 512Mi") || diff.contains("+        memory: 512Mi"),
        "{diff}"
    );
    assert!(diff.contains("GOMEMLIMIT"), "{diff}");
    let compliant = run(
        &["mutate", "--diff", "-f", "-"],
        Some(&run(&["mutate", "-f", path.to_str().unwrap()], None).stdout),
    );
    assert_eq!(
        text(&compliant.stdout),
        "",
        "no diff for a compliant manifest"
    );
}

#[test]
fn policy_flags_reach_the_offline_engine() {
    let path = manifests().join("pod.yaml");
    let out = text(
        &run(
            &[
                "mutate",
                "--percent",
                "90",
                "--gogc",
                "keep",
                "-f",
                path.to_str().unwrap(),
            ],
            None,
        )
        .stdout,
    );
    // floor(536870912 * 90 / 100)
    assert!(out.contains("value: \"483183820\""), "{out}");
    let out = text(
        &run(
            &[
                "mutate",
                "--missing-limit",
                "deny",
                "-f",
                manifests().join("daemonset.yaml").to_str().unwrap(),
            ],
            None,
        )
        .stderr,
    );
    assert!(
        out.contains("denied: DaemonSet monitoring/node-agent"),
        "{out}"
    );
}

#[test]
fn errors_name_their_cause() {
    let missing = run(&["mutate", "-f", "/nonexistent/app.yaml"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("failed to read /nonexistent/app.yaml"),
        "{}",
        text(&missing.stderr)
    );

    let bad = b"apiVersion: v1\nkind: Pod\n---\napiVersion: v1\nkind: [unclosed\n";
    let out = run(&["audit", "-f", "-"], Some(bad));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    // The line in the file, not in the document.
    assert!(
        err.contains("line 5 column") && err.contains("(document 2)"),
        "{err}"
    );

    let out = run(&["mutate", "-f", "-"], Some(b"{\"kind\": "));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("as JSON"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["audit", "--percent", "40", "-f", "-"], Some(b""));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("percent"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn live_audit_names_an_unreachable_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: t}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["audit"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("failed to reach the cluster at https://127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn works_as_a_kubectl_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-gomemlimit");
    std::os::unix::fs::symlink(BIN, &plugin).unwrap();
    let path = manifests().join("pod.yaml");
    let out = Command::new(&plugin)
        .args(["audit", "-f", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("256Mi -> 512Mi"),
        "{}",
        text(&out.stdout)
    );
    let help = Command::new(&plugin).arg("--help").output().unwrap();
    assert!(
        text(&help.stdout).contains("kubectl gomemlimit"),
        "{}",
        text(&help.stdout)
    );
}

/// The offline answer and the webhook's answer over HTTPS are the same pod.
#[tokio::test]
async fn mutate_equals_the_webhook_over_https() {
    let server = support::server::TestServer::start().await;
    let client = server.http2();
    for fixture in [
        "pod-create.json",
        "pod-create-compliant.json",
        "pod-create-invalid-annotation.json",
    ] {
        let review = support::fixture_json(fixture);
        let reply = server
            .post(
                &client,
                "/mutate",
                "application/json",
                serde_json::to_vec(&review).unwrap(),
            )
            .await;
        let response = reply.json()["response"].clone();
        let mut via_webhook = review["request"]["object"].clone();
        if let Some(patch) = response["patch"].as_str() {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(patch)
                .unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut via_webhook, &patch).unwrap();
        }
        let pod = serde_json::to_vec(&review["request"]["object"]).unwrap();
        let out = run(&["mutate", "-f", "-"], Some(&pod));
        let offline: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(offline, via_webhook, "{fixture}");
        assert_eq!(
            response["allowed"] == false,
            out.status.code() == Some(1),
            "{fixture}"
        );
    }
    server.stop().await;
}

const DENIED_BY_ANNOTATION: &[u8] = b"apiVersion: v1
kind: Pod
metadata:
  name: thirty
  annotations: {gomemlimit.io/percent: \"30\"}
spec:
  containers: [{name: app, image: x, resources: {limits: {memory: 64Mi}}}]
";

#[test]
fn audit_reports_what_enforce_would_deny() {
    let out = run(&["audit", "-f", "-"], Some(DENIED_BY_ANNOTATION));
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(
        table
            .contains("DENIED Pod default/thirty: invalid annotation gomemlimit.io/percent=\"30\""),
        "{table}"
    );
    // Nothing previewed that enforce would never do.
    assert!(!table.contains("limits.memory  off"), "{table}");
    assert!(
        table.ends_with("0 of 1 objects would change, 1 would be denied\n"),
        "{table}"
    );

    let out = run(
        &["audit", "-o", "json", "-f", "-"],
        Some(DENIED_BY_ANNOTATION),
    );
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["objects"][0]["denied"]
            .as_str()
            .is_some_and(|d| d.contains("gomemlimit.io/percent"))
    );
    assert_eq!(report["objects"][0]["containers"], serde_json::json!([]));
    assert_eq!(report["summary"]["wouldBeDenied"], 1);

    let pod_without_limit =
        b"{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"bare\"},
          \"spec\": {\"containers\": [{\"name\": \"app\", \"image\": \"x\"}]}}";
    let out = run(
        &["audit", "--missing-limit", "deny", "-f", "-"],
        Some(pod_without_limit),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout)
            .contains("DENIED Pod default/bare: container \"app\" has no memory limit"),
        "{}",
        text(&out.stdout)
    );
}

const AUDIT_ONLY_AND_ENFORCED: &[u8] = b"apiVersion: v1
kind: Pod
metadata:
  name: watched
  annotations: {gomemlimit.io/mode: audit}
spec:
  containers: [{name: app, image: x, resources: {limits: {memory: 64Mi}}}]
--- {apiVersion: v1, kind: Pod, metadata: {name: inline}, spec: {containers: [{name: app, image: x, resources: {requests: {memory: 90Mi}}}]}}
";

#[test]
fn mutate_and_audit_agree_on_audit_only_pods_and_documents_on_the_separator_line() {
    let mutated = run(&["mutate", "-f", "-"], Some(AUDIT_ONLY_AND_ENFORCED));
    assert!(mutated.status.success(), "{}", text(&mutated.stderr));
    let output = text(&mutated.stdout);
    // The audit-only pod is left alone; the one on the `---` line is read and mutated.
    assert!(output.starts_with(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: watched\n  annotations: {gomemlimit.io/mode: audit}\n"
    ));
    assert!(output.contains("---\napiVersion: v1\n"), "{output}");
    assert!(output.contains("gomemlimit.io/status"), "{output}");
    let stderr = text(&mutated.stderr);
    assert!(
        stderr.contains("warning: Pod default/inline: container \"app\": adds a memory limit of 90Mi where there was none"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "warning: Pod default/watched: container \"app\": would set requests.memory to 64Mi"
        ),
        "{stderr}"
    );

    let audit = run(&["audit", "-f", "-"], Some(AUDIT_ONLY_AND_ENFORCED));
    assert_eq!(audit.status.code(), Some(1));
    let table = text(&audit.stdout);
    assert!(table.contains("watched  app        - -> 64Mi"), "{table}");
    assert!(
        table.contains("inline   app        -          - -> 90Mi"),
        "{table}"
    );
    assert!(table.contains("AUDIT ONLY Pod default/watched"), "{table}");
    assert!(
        table.ends_with("1 of 2 objects would change, 1 audit only\n"),
        "{table}"
    );

    // What mutate wrote is what the webhook would leave: nothing more would change.
    let again = run(&["audit", "-f", "-"], Some(output.as_bytes()));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
}

#[test]
fn quantities_written_as_numbers_stay_as_written() {
    let yaml = b"apiVersion: v1\nkind: Pod\nmetadata: {name: y}\nspec:\n  containers:\n  - name: app\n    image: x\n    resources: {limits: {memory: 1e9}}\n";
    let json = br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"},
        "spec": {"containers": [{"name": "app", "image": "x",
                 "resources": {"limits": {"memory": 1e9}}}]}}"#;
    for input in [&yaml[..], &json[..]] {
        let mutated = text(&run(&["mutate", "-f", "-"], Some(input)).stdout);
        assert!(!mutated.contains("1000000000"), "{mutated}");
        assert_eq!(
            mutated.matches("1e9").count(),
            3,
            "limit, request, status: {mutated}"
        );
        let audit = run(&["audit", "--percent", "90", "-f", "-"], Some(input));
        let table = text(&audit.stdout);
        assert!(table.contains("- -> 1e9"), "{table}");
        let json = run(
            &["audit", "--mode", "audit", "-o", "json", "-f", "-"],
            Some(input),
        );
        let report: Value = serde_json::from_slice(&json.stdout).unwrap();
        assert!(
            report["objects"][0]["warnings"]
                .to_string()
                .contains("would set requests.memory to 1e9 (was unset)"),
            "{report}"
        );
    }
}
