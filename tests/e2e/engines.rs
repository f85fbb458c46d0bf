//! Both engines on the same API server: the webhook in one namespace, the native policies
//! (`gomemlimit-injector policy render`, or the chart's rendered manifests) in another,
//! with the same policy. Every pod goes to both; the stored pods are compared field by
//! field, and the warnings and denial messages too ([`crate::compare`], where every
//! accepted difference is named). Then the native policies against the engine itself, on
//! every fixture, so that the offline `mutate` and `audit` answers hold for either engine.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::api::Api;
use crate::compare::{Accepted, Outcome, Tally, normalized, reconcile};
use crate::env::{Env, ROOT, Webhook, eventually, rendered_webhook};
use crate::support::pods::generated;

/// A namespace served by the webhook and one served by the native policies, both with
/// the same policy.
struct Pair {
    tag: String,
    /// The native policies' name (their binding names too).
    name: String,
    webhook: Option<Webhook>,
    api: Api,
}

impl Pair {
    fn webhook_ns(&self) -> String {
        format!("{}-webhook", self.tag)
    }

    fn native_ns(&self) -> String {
        format!("{}-native", self.tag)
    }

    /// Sets up both engines for `flags` (policy flags of `serve` and `policy render`); the
    /// native policies come from `manifest` (a file of `deploy/manifests`) when given.
    async fn new(
        env: &Env,
        tag: &str,
        flags: &[&str],
        manifest: Option<&str>,
        name: &str,
    ) -> Result<Pair> {
        let audit = flags.windows(2).any(|w| w == ["--mode", "audit"])
            || manifest.is_some_and(|m| m.contains("audit"));
        let mut pair = Pair {
            tag: tag.to_owned(),
            name: name.to_owned(),
            webhook: None,
            api: Api::new(&env.dir)?,
        };
        for ns in [pair.webhook_ns(), pair.native_ns()] {
            env.namespace(&ns, json!({})).await?;
        }
        let port = if flags.is_empty() {
            env.webhook.port
        } else {
            let certs = &env.webhook.certs;
            let (cert, key) = (certs.join("tls.crt"), certs.join("tls.key"));
            let mut args = vec![
                "--tls-cert-file",
                cert.to_str().context("path")?,
                "--tls-key-file",
                key.to_str().context("path")?,
            ];
            args.extend(flags);
            let webhook = Webhook::start(&env.dir, certs, &format!("webhook-{tag}"), &args)?;
            webhook.wait_ready().await?;
            let port = webhook.port;
            pair.webhook = Some(webhook);
            port
        };
        pair.install_webhook(env, port).await?;
        let objects = match manifest {
            Some(file) => {
                let text =
                    std::fs::read_to_string(Path::new(ROOT).join("deploy/manifests").join(file))?;
                serde_saphyr::from_multiple::<Value>(&text)
                    .map_err(|e| anyhow::anyhow!("{file}: {e}"))?
                    .into_iter()
                    .filter(|d| !d.is_null())
                    .collect()
            }
            None => render(env, name, flags)?,
        };
        pair.install_native(env, objects)?;
        pair.wait_active(audit).await?;
        Ok(pair)
    }

    /// The chart's webhook configuration, by URL, for the webhook namespace only.
    async fn install_webhook(&self, env: &Env, port: u16) -> Result<()> {
        let mut config = rendered_webhook("optin", "enforce", "certmanager")?;
        let name = format!("gomemlimit-engines-{}", self.tag);
        config["metadata"] = json!({"name": name});
        let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &env.ca_cert);
        for webhook in config["webhooks"].as_array_mut().context("webhooks")? {
            webhook["clientConfig"] =
                json!({"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": ca});
            webhook["failurePolicy"] = json!("Fail");
            webhook["namespaceSelector"] =
                json!({"matchLabels": {"kubernetes.io/metadata.name": self.webhook_ns()}});
        }
        let _ = env.kubectl(
            &[
                "delete",
                "mutatingwebhookconfiguration",
                &name,
                "--ignore-not-found",
            ],
            None,
        )?;
        env.kubectl_ok(&["create", "-f", "-"], Some(&config.to_string()))?;
        Ok(())
    }

    /// The native policies, with their bindings pointed at the native namespace only.
    fn install_native(&self, env: &Env, mut objects: Vec<Value>) -> Result<()> {
        for o in &mut objects {
            if o["kind"].as_str().is_some_and(|k| k.ends_with("Binding")) {
                o["spec"]["matchResources"]["namespaceSelector"] =
                    json!({"matchLabels": {"kubernetes.io/metadata.name": self.native_ns()}});
            }
        }
        self.remove_native(env)?;
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        env.kubectl_ok(&["create", "-f", "-"], Some(&list.to_string()))?;
        Ok(())
    }

    fn remove_native(&self, env: &Env) -> Result<()> {
        let deny = format!("deny.{}", self.name);
        for (kind, name) in [
            ("mutatingadmissionpolicybinding", &self.name),
            ("mutatingadmissionpolicy", &self.name),
            ("validatingadmissionpolicybinding", &self.name),
            ("validatingadmissionpolicy", &self.name),
            ("validatingadmissionpolicybinding", &deny),
            ("validatingadmissionpolicy", &deny),
        ] {
            env.kubectl_ok(&["delete", kind, name, "--ignore-not-found"], None)?;
        }
        Ok(())
    }

    /// Waits until both engines act on probe pods: the API server picks up new
    /// configurations and each kind of policy asynchronously. In enforce, a probe is
    /// mutated with a warning (the mutating and the warning policy), and one with an
    /// invalid annotation is denied (the denying policy); in audit, a probe is warned about
    /// and left alone.
    async fn wait_active(&self, audit: bool) -> Result<()> {
        let probe = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
            "spec": {"automountServiceAccountToken": false,
                     "containers": [{"name": "app", "image": "registry.example/app:1",
                                     "resources": {"limits": {"memory": "64Mi"}},
                                     "envFrom": [{"configMapRef": {"name": "settings", "optional": true}}]}]}
        });
        let mut invalid = probe.clone();
        invalid["metadata"]["annotations"] = json!({"gomemlimit.io/mode": "probe"});
        for ns in [self.webhook_ns(), self.native_ns()] {
            let (api, probe, invalid, ns) = (&self.api, &probe, &invalid, &ns);
            eventually(
                Duration::from_secs(60),
                "both engines active",
                || async move {
                    let answer = api.create_pod(ns, probe, true).await?;
                    let mutated = answer.body["metadata"]["annotations"]
                        .get("gomemlimit.io/status")
                        .is_some();
                    if audit {
                        let warned = answer.warnings.iter().any(|w| w.contains("would set"));
                        return Ok(warned && !mutated);
                    }
                    let warned = answer
                        .warnings
                        .iter()
                        .any(|w| w.contains("envFrom may also define"));
                    let denied = api.create_pod(ns, invalid, true).await?.status == 403;
                    Ok(mutated && warned && denied)
                },
            )
            .await?;
        }
        Ok(())
    }

    /// One pod through both engines; the stored pods (read back) or the dry-run answers
    /// compared.
    async fn compare(&self, pod: &Value, dry_run: bool) -> Result<Vec<Accepted>> {
        let (webhook, native) = futures::future::try_join(
            self.outcome(&self.webhook_ns(), pod, dry_run),
            self.outcome(&self.native_ns(), pod, dry_run),
        )
        .await?;
        reconcile(pod, &webhook, &native)
    }

    async fn outcome(&self, ns: &str, pod: &Value, dry_run: bool) -> Result<Outcome> {
        let answer = self.api.create_pod(ns, pod, dry_run).await?;
        let mut outcome = Outcome::of(&answer);
        if !dry_run && outcome.pod.is_some() {
            let name = pod["metadata"]["name"].as_str().context("name")?;
            outcome.pod = Some(normalized(&self.api.pod(ns, name).await?));
        }
        Ok(outcome)
    }

    /// Removes both engines' configuration (the namespaces stay), whatever `result` was,
    /// and returns it.
    fn finish<T>(mut self, env: &Env, result: Result<T>) -> Result<T> {
        let removed = self.remove(env);
        let value = result?;
        removed.map(|()| value)
    }

    fn remove(&mut self, env: &Env) -> Result<()> {
        if let Some(mut webhook) = self.webhook.take() {
            webhook.stop();
        }
        let name = format!("gomemlimit-engines-{}", self.tag);
        env.kubectl_ok(
            &[
                "delete",
                "mutatingwebhookconfiguration",
                &name,
                "--ignore-not-found",
            ],
            None,
        )?;
        self.remove_native(env)
    }
}

/// `gomemlimit-injector policy render NAME FLAGS -o json`, as objects.
fn render(env: &Env, name: &str, flags: &[&str]) -> Result<Vec<Value>> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gomemlimit-injector"))
        .args(["policy", "render", "-o", "json", "--name", name])
        .args(flags)
        .output()
        .with_context(|| format!("policy render for {}", env.dir.display()))?;
    ensure!(
        out.status.success(),
        "policy render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout)?;
    Ok(list["items"].as_array().context("items")?.clone())
}

/// A pod named `name` with one container `app` and the given `resources`.
fn pod(name: &str, resources: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "registry.example/app:1", "resources": resources}]}
    })
}

fn with_annotations(mut pod: Value, annotations: Value) -> Value {
    pod["metadata"]["annotations"] = annotations;
    pod
}

fn memory(limit: Option<&str>, request: Option<&str>) -> Value {
    let mut r = json!({});
    if let Some(l) = limit {
        r["limits"] = json!({"memory": l});
    }
    if let Some(q) = request {
        r["requests"] = json!({"memory": q});
    }
    r
}

/// The pods of the other scenarios, and the cases of the contract they do not cover.
fn scenario_pods() -> Vec<Value> {
    let mut pods = vec![
        pod("request-below-limit", memory(Some("512Mi"), Some("256Mi"))),
        pod("limit-only", memory(Some("1Gi"), None)),
        pod("request-only", memory(None, Some("300Mi"))),
        pod("no-memory", memory(None, None)),
        pod("fractional", memory(Some("1500m"), None)),
        pod("out-of-range", memory(Some("10E"), None)),
        pod("zero-limit", memory(Some("0"), None)),
        with_annotations(
            pod("percent-90", memory(Some("512Mi"), None)),
            json!({"gomemlimit.io/percent": "90"}),
        ),
        with_annotations(
            pod("percent-30", memory(Some("512Mi"), None)),
            json!({"gomemlimit.io/percent": "30"}),
        ),
        with_annotations(
            pod("gogc-keep", memory(Some("512Mi"), None)),
            json!({"gomemlimit.io/gogc": "keep"}),
        ),
        with_annotations(
            pod("gogc-200", memory(Some("512Mi"), None)),
            json!({"gomemlimit.io/gogc": "200"}),
        ),
        with_annotations(
            pod("audit-pod", memory(Some("512Mi"), Some("128Mi"))),
            json!({"gomemlimit.io/mode": "audit"}),
        ),
        with_annotations(
            pod("bad-mode", memory(Some("512Mi"), None)),
            json!({"gomemlimit.io/mode": "enforce"}),
        ),
        with_annotations(
            pod("opted-out", memory(Some("512Mi"), None)),
            json!({"gomemlimit.io/inject": "disabled"}),
        ),
        with_annotations(
            pod("unreadable-status", memory(Some("512Mi"), None)),
            json!({"gomemlimit.io/status": "{not json"}),
        ),
        with_annotations(
            pod("tiny-literal", memory(Some("1"), None)),
            json!({"gomemlimit.io/percent": "90"}),
        ),
    ];
    let mut labelled = pod("opted-out-label", memory(Some("512Mi"), None));
    labelled["metadata"]["labels"] = json!({"gomemlimit.io/inject": "disabled"});
    pods.push(labelled);
    let mut mirror = with_annotations(
        pod("mirror", memory(Some("512Mi"), None)),
        json!({"kubernetes.io/config.mirror": "x"}),
    );
    mirror["spec"]["nodeName"] = json!("node-1");
    pods.push(mirror);
    let mut user = pod("user-env", memory(Some("512Mi"), None));
    user["spec"]["containers"][0]["env"] = json!([{"name": "GOMEMLIMIT", "value": "400MiB"}]);
    pods.push(user);
    let mut gogc = pod("user-gogc", memory(Some("512Mi"), None));
    gogc["spec"]["containers"][0]["env"] = json!([{"name": "GOGC", "value": "50"}]);
    pods.push(gogc);
    let mut env_from = pod("env-from", memory(Some("512Mi"), None));
    env_from["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "settings", "optional": true}}]);
    pods.push(env_from);
    // Copied from a mutated pod (or created from a template `mutate` wrote): the status
    // annotation is there already, and envFrom beside the recorded GOMEMLIMIT.
    let mut copied = with_annotations(
        pod("copied-status", memory(Some("512Mi"), None)),
        json!({"gomemlimit.io/status": "{\"containers\":{\"app\":{\"gomemlimit\":\"limits.memory\",\"gogc\":\"off\"}}}"}),
    );
    copied["spec"]["containers"][0]["env"] = json!([
        {"name": "GOMEMLIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1"}}},
        {"name": "GOGC", "value": "off"}
    ]);
    copied["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "settings", "optional": true}}]);
    pods.push(copied);
    let mut sidecars = pod("init-and-sidecar", memory(Some("256Mi"), None));
    sidecars["spec"]["initContainers"] = json!([
        {"name": "migrate", "image": "registry.example/app:1", "resources": memory(Some("128Mi"), None)},
        {"name": "proxy", "image": "registry.example/app:1", "restartPolicy": "Always", "resources": memory(None, Some("64Mi"))}
    ]);
    pods.push(sidecars);
    let mut excluded = with_annotations(
        pod("excluded", memory(Some("256Mi"), None)),
        json!({"gomemlimit.io/exclude-containers": "side"}),
    );
    excluded["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "side", "image": "registry.example/app:1", "resources": memory(Some("64Mi"), None)}));
    pods.push(excluded);
    let mut bad_exclude = excluded_copy(&pods, "bad-exclude");
    bad_exclude["metadata"]["annotations"] =
        json!({"gomemlimit.io/exclude-containers": "Side_Car"});
    pods.push(bad_exclude);
    let mut pod_level = pod("pod-level", memory(None, None));
    pod_level["spec"]["resources"] = json!({"limits": {"memory": "1Gi"}});
    pods.push(pod_level);
    let mut shared = excluded_copy(&pods, "pod-level-shared");
    shared["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    shared["spec"]["containers"][0]["resources"] = json!({});
    shared["spec"]["containers"][1]["resources"] = json!({});
    shared["spec"]["resources"] = json!({"limits": {"memory": "1Gi"}});
    pods.push(shared);
    // Pod-level budgets: what the containers beside each one leave of the pod limit (an
    // ordinary init container only shares with the sidecars declared before it), and
    // nothing left.
    let mut budget = pod("pod-level-budget", memory(None, None));
    budget["spec"]["resources"] = json!({"limits": {"memory": "1Gi"}});
    budget["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "side", "image": "registry.example/app:1", "resources": memory(Some("256Mi"), None)}));
    budget["spec"]["initContainers"] = json!([
        {"name": "proxy", "image": "registry.example/app:1", "restartPolicy": "Always", "resources": memory(Some("64Mi"), None)},
        {"name": "migrate", "image": "registry.example/app:1"}
    ]);
    pods.push(budget);
    let mut nothing_left = pod("pod-level-nothing-left", memory(None, None));
    nothing_left["spec"]["resources"] = json!({"limits": {"memory": "256Mi"}});
    nothing_left["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "side", "image": "registry.example/app:1", "resources": memory(Some("256Mi"), None)}));
    pods.push(nothing_left);
    // The memory resizePolicy: added beside a cpu entry, a user's own kept, none allowed
    // under restartPolicy Never.
    let mut resize_cpu = pod("resize-cpu", memory(Some("512Mi"), None));
    resize_cpu["spec"]["containers"][0]["resizePolicy"] =
        json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"}]);
    pods.push(resize_cpu);
    let mut resize_kept = pod("resize-kept", memory(Some("512Mi"), None));
    resize_kept["spec"]["containers"][0]["resizePolicy"] =
        json!([{"resourceName": "memory", "restartPolicy": "NotRequired"}]);
    pods.push(resize_kept);
    let mut never = pod("restart-never", memory(Some("512Mi"), None));
    never["spec"]["restartPolicy"] = json!("Never");
    pods.push(never);
    // A copy of a pod that had a limit added: the status records it.
    let mut copied_limit = with_annotations(
        pod("copied-limit", memory(Some("300Mi"), Some("300Mi"))),
        json!({"gomemlimit.io/status": "{\"containers\":{\"app\":{\"limit\":\"300Mi\",\"gomemlimit\":\"limits.memory\",\"gogc\":\"off\",\"resizePolicy\":\"RestartContainer\"}}}"}),
    );
    copied_limit["spec"]["containers"][0]["env"] = json!([
        {"name": "GOMEMLIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1"}}},
        {"name": "GOGC", "value": "off"}
    ]);
    copied_limit["spec"]["containers"][0]["resizePolicy"] =
        json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
    pods.push(copied_limit);
    // More warnings than the API server passes on (or, with missingLimit: deny, a denial
    // message longer than it keeps).
    let mut crowded = pod("sixty-without-memory", memory(None, None));
    crowded["spec"]["containers"] = (0..60)
        .map(|i| json!({"name": format!("container-{i}"), "image": "registry.example/app:1"}))
        .collect();
    pods.push(crowded);
    pods
}

/// The pod `excluded` of `pods` under another name.
fn excluded_copy(pods: &[Value], name: &str) -> Value {
    let mut p = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "excluded")
        .cloned()
        .expect("the excluded pod");
    p["metadata"]["name"] = json!(name);
    p
}

/// Every scenario pod created through both engines, compared as stored.
async fn compare_scenarios(pair: &Pair, pods: &[Value]) -> Result<Tally> {
    let mut tally = Tally::default();
    for p in pods {
        tally.add(&pair.compare(p, false).await?);
    }
    Ok(tally)
}

/// `pods` through both engines with server-side dry run, ten at a time.
async fn compare_dry_run(pair: &Pair, pods: &[Value]) -> Result<Tally> {
    let mut tally = Tally::default();
    for chunk in pods.chunks(10) {
        let results = futures::future::join_all(chunk.iter().map(|p| pair.compare(p, true))).await;
        for result in results {
            tally.add(&result?);
        }
    }
    Ok(tally)
}

pub(crate) async fn engines_store_the_same_pods(env: &mut Env) -> Result<()> {
    let env: &Env = env;
    // The chart's own rendered native manifest, against the webhook with the default policy.
    {
        let owned = Pair::new(
            env,
            "eng-default",
            &[],
            Some("native-optin-enforce.yaml"),
            "pods.gomemlimit.io",
        )
        .await?;
        let pair = &owned;
        let result: Result<()> = async {
        let pods = scenario_pods();
        let mut tally = compare_scenarios(pair, &pods).await?;
        // LimitRange defaults (applied before either engine) and a Deployment's pods.
        for ns in [pair.webhook_ns(), pair.native_ns()] {
            env.apply(&ns, &json!({
                "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "mem"},
                "spec": {"limits": [{"type": "Container",
                    "default": {"memory": "300Mi"}, "defaultRequest": {"memory": "100Mi"}}]}
            }))?;
        }
        let bare = pod("limit-range", json!({}));
        let (bare_ref, pair_ref) = (&bare, pair);
        eventually(Duration::from_secs(30), "LimitRange defaults in both namespaces", || async move {
            for ns in [pair_ref.webhook_ns(), pair_ref.native_ns()] {
                let answer = pair_ref.api.create_pod(&ns, bare_ref, true).await?;
                if answer.body["spec"]["containers"][0]["resources"]["limits"]["memory"] != "300Mi" {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
        tally.add(&pair.compare(&bare, false).await?);
        tally.add(&deployment_pods(env, pair).await?);
        let dry = pod("dry-run", memory(Some("1Gi"), Some("256Mi")));
        tally.add(&pair.compare(&dry, true).await?);
        println!(
            "  {} scenario pods, a LimitRange default, a Deployment's pods and a dry run stored alike; accepted differences: {tally}",
            pods.len()
        );
        ensure!(
            tally.0.contains_key(&Accepted::RecordedWarning)
                && tally.0.contains_key(&Accepted::UnreadableStatusRewritten)
                && tally.0.contains_key(&Accepted::DenialPrefix)
                && tally.0.contains_key(&Accepted::WarningBudget),
            "the named differences did not show: {tally}"
        );
        Ok(())
    }
        .await;
        owned.finish(env, result)
    }
}

/// A Deployment's pods in both namespaces, compared without what differs per pod (the
/// generated name, the owner's uid).
async fn deployment_pods(env: &Env, pair: &Pair) -> Result<Vec<Accepted>> {
    let deployment = crate::env::deployment("sales-api", 1);
    let mut stored = Vec::new();
    for ns in [pair.webhook_ns(), pair.native_ns()] {
        env.apply(&ns, &deployment)?;
        let pods = env.pods(&ns);
        let pods = &pods;
        eventually(
            Duration::from_secs(60),
            "the Deployment's pod",
            || async move { Ok(!pods.list(&Default::default()).await?.items.is_empty()) },
        )
        .await?;
        let list = pods.list(&Default::default()).await?;
        let mut p = normalized(&serde_json::to_value(&list.items[0])?);
        for key in ["name", "ownerReferences"] {
            p["metadata"]
                .as_object_mut()
                .context("metadata")?
                .remove(key);
        }
        stored.push(p);
    }
    let mut fields = Vec::new();
    crate::compare::differences(&stored[0], &stored[1], "", &mut fields);
    ensure!(
        fields.is_empty(),
        "Deployment pods differ:\n  {}",
        fields.join("\n  ")
    );
    Ok(Vec::new())
}

pub(crate) async fn engines_agree_under_other_policies(env: &mut Env) -> Result<()> {
    let env: &Env = env;
    let policies: [(&str, &[&str]); 3] = [
        ("eng-percent", &["--percent", "90", "--gogc", "keep"]),
        (
            "eng-deny",
            &[
                "--missing-limit",
                "deny",
                "--min-percent",
                "60",
                "--max-percent",
                "95",
                "--percent",
                "95",
            ],
        ),
        (
            "eng-default-memory",
            &[
                "--missing-limit",
                "default",
                "--default-memory",
                "256Mi",
                "--exclude-containers",
                "side,i1",
                "--restart-on-resize",
                "false",
            ],
        ),
    ];
    let mut total = Tally::default();
    let mut generated_count = 0;
    for (seed, (tag, flags)) in policies.into_iter().enumerate() {
        let name = format!("{tag}.gomemlimit.io");
        let pods = generated(seed as u8 + 1, 100);
        generated_count += pods.len();
        let total = &mut total;
        {
            let owned = Pair::new(env, tag, flags, None, &name).await?;
            let pair = &owned;
            let result: Result<()> = async {
                total.add_all(compare_scenarios(pair, &scenario_pods()).await?);
                total.add_all(compare_dry_run(pair, &pods).await?);
                Ok(())
            }
            .await;
            owned.finish(env, result)?;
        }
    }
    println!(
        "  3 policies × {} scenario pods stored alike and {generated_count} generated pods alike (dry run); accepted differences: {total}",
        scenario_pods().len()
    );
    ensure!(
        total.0.contains_key(&Accepted::LongDenial),
        "missingLimit: deny did not cut a long denial: {total}"
    );
    Ok(())
}

pub(crate) async fn engines_agree_in_audit(env: &mut Env) -> Result<()> {
    let env: &Env = env;
    {
        let owned = Pair::new(
            env,
            "eng-audit",
            &["--mode", "audit"],
            None,
            "pods.gomemlimit.io",
        )
        .await?;
        let pair = &owned;
        let result: Result<()> = async {
        let pods = scenario_pods();
        let tally = compare_scenarios(pair, &pods).await?;
        // Both engines leave every pod as it was sent.
        for p in &pods {
            let name = p["metadata"]["name"].as_str().context("name")?;
            if let Ok(stored) = pair.api.pod(&pair.native_ns(), name).await {
                ensure!(
                    stored["metadata"]["annotations"].get("gomemlimit.io/status") == p["metadata"]["annotations"].get("gomemlimit.io/status"),
                    "{name} was changed in audit"
                );
            }
        }
        // The audit log: the same annotations, under the same keys.
        let audit_log = env.dir.join("audit/audit.log");
        let audit_log = &audit_log;
        let (wh, nat) = (pair.webhook_ns(), pair.native_ns());
        let (wh, nat) = (&wh, &nat);
        eventually(Duration::from_secs(20), "audit annotations of both engines", || async move {
            let text = std::fs::read_to_string(audit_log)?;
            let annotations = |ns: &str| {
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|e| {
                        e["objectRef"]["namespace"] == ns
                            && e["objectRef"]["name"] == "request-below-limit"
                            && e["stage"] == "ResponseComplete"
                    })
                    .map(|e| e["annotations"].clone())
            };
            let (Some(a), Some(b)) = (annotations(wh), annotations(nat)) else {
                return Ok(false);
            };
            for key in ["pods.gomemlimit.io/would-mutate", "pods.gomemlimit.io/changes"] {
                ensure!(a[key].is_string() && a[key] == b[key], "{key}: webhook {} native {}", a[key], b[key]);
            }
            ensure!(
                b.get("validation.policy.admission.k8s.io/validation_failure").is_some(),
                "no Audit action record: {b}"
            );
            Ok(true)
        })
        .await?;
        println!("  {} scenario pods audited alike, audit annotations alike; accepted differences: {tally}", pods.len());
        Ok(())
    }
        .await;
        owned.finish(env, result)
    }
}

pub(crate) async fn generated_pods_agree_between_engines(env: &mut Env) -> Result<()> {
    let env: &Env = env;
    {
        let owned = Pair::new(
            env,
            "eng-generated",
            &[],
            None,
            "eng-generated.gomemlimit.io",
        )
        .await?;
        let pair = &owned;
        let result: Result<()> = async {
            let pods = generated(0, 300);
            let tally = compare_dry_run(pair, &pods).await?;
            println!(
                "  {} generated pods alike (dry run); accepted differences: {tally}",
                pods.len()
            );
            Ok(())
        }
        .await;
        owned.finish(env, result)
    }
}

/// In-place resizes (`pods/resize`) of pods each engine mutated: a downward-API
/// GOMEMLIMIT with the memory resizePolicy the engine added, and one with the user's own;
/// a literal, lowered (refused) and raised (warned). Each resize is a server-side dry run
/// of the stored pod, compared as creations are.
pub(crate) async fn engines_agree_on_resizes(env: &mut Env) -> Result<()> {
    let env: &Env = env;
    let owned = Pair::new(env, "eng-resize", &[], None, "eng-resize.gomemlimit.io").await?;
    let pair = &owned;
    let result: Result<()> = async {
        let downward = pod("downward", memory(Some("64Mi"), None));
        let mut kept = pod("downward-kept", memory(Some("64Mi"), None));
        kept["spec"]["containers"][0]["resizePolicy"] =
            json!([{"resourceName": "memory", "restartPolicy": "NotRequired"}]);
        let literal = with_annotations(
            pod("literal", memory(Some("64Mi"), None)),
            json!({"gomemlimit.io/percent": "90"}),
        );
        let mut tally = Tally::default();
        let mut resizes = 0;
        for (original, sizes) in [
            (&downward, &["128Mi", "32Mi"][..]),
            (&kept, &["128Mi"][..]),
            (&literal, &["48Mi", "96Mi", "64Mi"][..]),
        ] {
            tally.add(&pair.compare(original, false).await?);
            let name = original["metadata"]["name"].as_str().context("name")?;
            for size in sizes {
                let patch = json!({"spec": {"containers": [{"name": "app", "resources": {
                    "limits": {"memory": size}, "requests": {"memory": size}}}]}});
                let (webhook, native) = futures::future::try_join(
                    pair.api.resize_pod(&pair.webhook_ns(), name, &patch, true),
                    pair.api.resize_pod(&pair.native_ns(), name, &patch, true),
                )
                .await?;
                let (webhook, native) = (Outcome::of(&webhook), Outcome::of(&native));
                tally.add(
                    &reconcile(original, &webhook, &native)
                        .with_context(|| format!("resize of {name} to {size}"))?,
                );
                resizes += 1;
            }
        }
        println!(
            "  {resizes} resizes of 3 mutated pods answered alike; accepted differences: {tally}"
        );
        ensure!(
            tally.0.contains_key(&Accepted::DenialPrefix)
                && tally.0.contains_key(&Accepted::PolicyWarningPrefix),
            "no resize was refused and warned about by both: {tally}"
        );
        Ok(())
    }
    .await;
    owned.finish(env, result)
}

pub(crate) async fn native_policies_bound_their_cost(env: &mut Env) -> Result<()> {
    let env: &Env = env;
    {
        let owned = Pair::new(
            env,
            "eng-cost",
            &["--percent", "90"],
            None,
            "eng-cost.gomemlimit.io",
        )
        .await?;
        let pair = &owned;
        let result: Result<()> = async {
        // The worst case the native policies take: 200 containers with the longest names,
        // 99 env entries each and envFrom, a status annotation recording every one with a
        // literal another webhook's limit change made stale.
        let largest = crowded(200, 99);
        let seen = pair.compare(&largest, true).await?;
        ensure!(!seen.contains(&Accepted::BeyondNativeBounds), "the largest pod was left alone");
        let beyond = crowded(201, 1);
        let seen = pair.compare(&beyond, true).await?;
        ensure!(seen.contains(&Accepted::BeyondNativeBounds), "201 containers were evaluated: {seen:?}");
        let answer = pair.api.create_pod(&pair.native_ns(), &beyond, true).await?;
        ensure!(
            answer.warnings.iter().any(|w| w.ends_with("pod: has 201 containers, more than the native policies evaluate (200); left unchanged")),
            "{:?}",
            answer.warnings
        );
        println!("  200 containers evaluated alike; 201 left alone by the native policies, with a warning");
        Ok(())
    }
        .await;
        owned.finish(env, result)
    }
}

/// `n` containers with 63-character names and `env` entries each, recorded in a status
/// annotation with literals for larger limits.
fn crowded(n: usize, env: usize) -> Value {
    let name = |i: usize| {
        let head = format!("c{i}-");
        format!("{head}{}", "x".repeat(63 - head.len()))
    };
    let mut containers = Vec::new();
    let mut records = Vec::new();
    for i in 0..n {
        let limit = 64 + i as u64;
        let old = (limit + 100) * 1_048_576 * 90 / 100;
        let mut vars: Vec<Value> = (0..env)
            .map(|k| json!({"name": format!("V{k}"), "value": "v"}))
            .collect();
        vars.push(json!({"name": "GOMEMLIMIT", "value": old.to_string()}));
        containers.push(json!({
            "name": name(i), "image": "registry.example/app:1",
            "resources": {"limits": {"memory": format!("{limit}Mi")}},
            "env": vars, "envFrom": [{"configMapRef": {"name": "settings", "optional": true}}]
        }));
        records.push(format!(
            "\"{}\":{{\"request\":\"{}Mi\",\"gomemlimit\":\"{old}\",\"percent\":90,\"gogc\":\"off\"}}",
            name(i),
            limit + 100
        ));
    }
    records.sort();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("crowded-{n}"), "annotations": {
            "gomemlimit.io/status": format!("{{\"containers\":{{{}}}}}", records.join(","))
        }},
        "spec": {"automountServiceAccountToken": false, "containers": containers}
    })
}

pub(crate) async fn another_mutating_policy_changes_the_limit(env: &mut Env) -> Result<()> {
    let env: &Env = env;
    {
        let owned = Pair::new(
            env,
            "eng-reinvoke",
            &["--percent", "90"],
            None,
            "eng-reinvoke.gomemlimit.io",
        )
        .await?;
        let pair = &owned;
        let result: Result<()> = async {
        // Sets every container's memory limit and request to 256Mi, in both namespaces.
        let changer = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
             "metadata": {"name": "e2e-limit-changer"},
             "spec": {"failurePolicy": "Fail", "reinvocationPolicy": "IfNeeded",
                "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]},
                "matchConditions": [{"name": "asked", "expression": "object.metadata.?annotations[?'e2e.gomemlimit.io/limit'].hasValue()"}],
                "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression":
                    "lists.range(size(object.spec.containers)).map(i, JSONPatch{op: 'add', path: '/spec/containers/' + string(i) + '/resources', value: {'limits': {'memory': '256Mi'}, 'requests': {'memory': '256Mi'}}})"}}]}},
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
             "metadata": {"name": "e2e-limit-changer"},
             "spec": {"policyName": "e2e-limit-changer", "matchResources": {"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [pair.webhook_ns(), pair.native_ns()]}]}}}}
        ]});
        env.kubectl_ok(&["apply", "-f", "-"], Some(&changer.to_string()))?;
        let p = with_annotations(pod("changed", memory(Some("512Mi"), None)), json!({"e2e.gomemlimit.io/limit": "256Mi"}));
        let (p_ref, pair_ref) = (&p, pair);
        let changed = eventually(Duration::from_secs(30), "the limit changed in both namespaces", || async move {
            for ns in [pair_ref.webhook_ns(), pair_ref.native_ns()] {
                let answer = pair_ref.api.create_pod(&ns, p_ref, true).await?;
                if answer.body["spec"]["containers"][0]["resources"]["limits"]["memory"] != "256Mi" {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await;
        let compared = match changed {
            Ok(()) => pair.compare(&p, false).await.map(|_| ()),
            Err(e) => Err(e),
        };
        env.kubectl_ok(&["delete", "-f", "-", "--ignore-not-found"], Some(&changer.to_string()))?;
        compared?;
        let stored = pair.api.pod(&pair.native_ns(), "changed").await?;
        let gml = &stored["spec"]["containers"][0]["env"][0];
        ensure!(gml["value"] == "241591910", "GOMEMLIMIT not recomputed for 256Mi: {gml}");
        println!("  a limit another mutating policy lowered: the same literal (90% of 256Mi) with both engines");
        Ok(())
    }
        .await;
        owned.finish(env, result)
    }
}

/// Fixture pods: the objects of the Pod CREATE AdmissionReviews and the pod templates of
/// the manifests in `tests/data`, made creatable (no service account to look up).
fn fixture_pods() -> Result<Vec<(String, Value)>> {
    let data = Path::new(ROOT).join("tests/data");
    let mut pods = Vec::new();
    for entry in std::fs::read_dir(&data)? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_owned();
        if !file.starts_with("pod-create") {
            continue;
        }
        let review: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        pods.push((file, review["request"]["object"].clone()));
    }
    for entry in std::fs::read_dir(data.join("manifests"))? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = std::fs::read_to_string(&path)?;
        let docs: Vec<Value> = if file.ends_with(".json") {
            vec![serde_json::from_str(&text)?]
        } else {
            serde_saphyr::from_multiple(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?
        };
        let mut objects: Vec<Value> = Vec::new();
        for d in docs {
            match d["items"].as_array() {
                Some(items) => objects.extend(items.iter().cloned()),
                None => objects.push(d),
            }
        }
        for (i, o) in objects.iter().enumerate() {
            let template = match o["kind"].as_str() {
                Some("Pod") => Some(o.clone()),
                Some("CronJob") => Some(o["spec"]["jobTemplate"]["spec"]["template"].clone()),
                Some(_) => o["spec"].get("template").cloned(),
                None => None,
            };
            if let Some(t) = template.filter(|t| t.is_object()) {
                pods.push((format!("{file}#{i}"), t));
            }
        }
    }
    pods.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(pods
        .into_iter()
        .enumerate()
        .map(|(i, (source, mut pod))| {
            pod["apiVersion"] = json!("v1");
            pod["kind"] = json!("Pod");
            if !pod["metadata"].is_object() {
                pod["metadata"] = json!({});
            }
            crate::support::pods::as_new_pod(&mut pod);
            pod["metadata"]["name"] = json!(format!("fixture-{i}"));
            (source, pod)
        })
        .collect())
}

pub(crate) async fn native_policies_agree_with_the_engine_on_every_fixture(
    env: &mut Env,
) -> Result<()> {
    let env: &Env = env;
    let plain = "eng-fixtures-plain";
    env.namespace(plain, json!({})).await?;
    {
        let owned = Pair::new(env, "eng-fixtures", &[], None, "eng-fixtures.gomemlimit.io").await?;
        let pair = &owned;
        let result: Result<()> = async {
        let fixtures = fixture_pods()?;
        ensure!(fixtures.len() >= 10, "only {} fixtures found", fixtures.len());
        let mut tally = Tally::default();
        for (source, pod) in &fixtures {
            // The pod as the admission chain hands it to an engine: defaulted, not stored.
            let seen = pair.api.create_pod(plain, pod, true).await?;
            if seen.status >= 300 {
                bail!("{source}: the API server refused the fixture: {}", seen.body);
            }
            let mut admitted = seen.body.clone();
            admitted.as_object_mut().context("pod")?.remove("status");
            let offline = offline_outcome(&admitted)?;
            let native_answer = pair.api.create_pod(&pair.native_ns(), pod, true).await?;
            let mut native = Outcome::of(&native_answer);
            native.server.clear();
            if let Some(p) = native.pod.as_mut() {
                p.as_object_mut().context("pod")?.remove("status");
            }
            let seen = reconcile(pod, &offline, &native).with_context(|| format!("fixture {source}"))?;
            tally.add(&seen);
        }
        println!(
            "  {} fixtures: the engine offline (mutate's code path) and the native policies agree; accepted differences: {tally}",
            fixtures.len()
        );
        Ok(())
    }
        .await;
        owned.finish(env, result)
    }
}

/// What `engine::evaluate_as` (through the pure handler, as `mutate` and `/mutate` run it)
/// makes of `pod`.
fn offline_outcome(pod: &Value) -> Result<Outcome> {
    use crate::support::review::{apply, handle_json, pod_review, response_of};
    let review = pod_review("fixture", pod);
    let policy = gomemlimit_injector::policy::Policy::default();
    let (reply, _) = handle_json(
        gomemlimit_injector::admission::Endpoint::Mutate,
        &serde_json::to_vec(&review)?,
        &policy,
    );
    let response = response_of(&reply.body);
    let warnings: Vec<String> = response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let allowed = response["allowed"] == true;
    let mut answer_pod = normalized(&apply(&review, &response));
    answer_pod.as_object_mut().context("pod")?.remove("status");
    Ok(Outcome {
        pod: allowed.then_some(answer_pod),
        ours: warnings,
        prefix: 0,
        server: Vec::new(),
        denial: (!allowed).then(|| {
            response["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }),
        error: None,
    })
}
