//! End-to-end tests: the webhook binary called over TLS by a real kube-apiserver (built from
//! the upstream Go modules by `cluster/build.sh`), with the MutatingWebhookConfiguration
//! taken from the chart's rendered manifests and only `clientConfig` switched to a URL.
//!
//! Run with `make e2e`. Without the control-plane binaries the suite fails under `CI=true`
//! and is skipped (with a message) elsewhere.

// Scenarios read as scripts, step by step, and `env` is this suite's own toolbox: the
// package's limit on function length is for the product's code.
#![allow(clippy::too_many_lines)]

mod api;
mod audit;
mod certificates;
mod checks;
#[path = "../cluster/mod.rs"]
mod cluster;
mod compare;
mod engines;
mod env;
mod escaped;
mod generated;
mod mutation;
mod selection;
#[path = "../support/mod.rs"]
pub mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use audit::{audit_warns_and_stores_the_pod_unchanged, live_audit_groups_pods_by_workload};
use certificates::{
    certificate_rotation_loses_no_call, self_managed_certificates_bootstrap_and_are_trusted,
};
use cluster::{Scenario, run_scenarios, scenarios};
use engines::{
    another_mutating_policy_changes_the_limit, engines_agree_in_audit, engines_agree_on_resizes,
    engines_agree_under_other_policies, engines_store_the_same_pods,
    generated_pods_agree_between_engines, native_policies_agree_with_the_engine_on_every_fixture,
    native_policies_bound_their_cost,
};
use env::Env;
use escaped::{
    cluster_wide_background_audit_leaves_out_what_the_webhook_leaves_out,
    escaped_pods_are_counted_and_drop_to_zero_when_recreated,
};
use generated::generated_pods_are_all_accepted;
use mutation::{
    deployment_pods_are_mutated, limit_range_default_is_honoured,
    percent_annotation_gives_the_exact_literal_and_invalid_is_denied,
    server_dry_run_shows_the_mutation_and_stores_nothing,
};
use selection::{
    cluster_wide_skips_excluded_namespaces_and_opted_out_pods,
    opt_in_mutates_only_labelled_namespaces, webhook_down_follows_the_failure_policy,
};

fn main() -> ExitCode {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(run(filter))
}

async fn run(filter: Vec<String>) -> ExitCode {
    let ci = cluster::ci();
    let bin = match env::kubernetes_bin() {
        Ok(Some(bin)) => bin,
        other => {
            let why = format!("control-plane binaries not found ({other:?}); run `make e2e`");
            if ci {
                eprintln!("error: {why}");
                return ExitCode::FAILURE;
            }
            println!("skipping the end-to-end suite: {why}");
            return ExitCode::SUCCESS;
        }
    };
    let started = Instant::now();
    let mut env = match Env::start(&bin).await {
        Ok(env) => env,
        Err(e) => {
            eprintln!("error: failed to start the end-to-end environment: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let all: &[(&str, Scenario<Env>)] = scenarios![
        opt_in_mutates_only_labelled_namespaces,
        cluster_wide_skips_excluded_namespaces_and_opted_out_pods,
        audit_warns_and_stores_the_pod_unchanged,
        percent_annotation_gives_the_exact_literal_and_invalid_is_denied,
        server_dry_run_shows_the_mutation_and_stores_nothing,
        limit_range_default_is_honoured,
        deployment_pods_are_mutated,
        generated_pods_are_all_accepted,
        certificate_rotation_loses_no_call,
        self_managed_certificates_bootstrap_and_are_trusted,
        live_audit_groups_pods_by_workload,
        engines_store_the_same_pods,
        engines_agree_under_other_policies,
        engines_agree_in_audit,
        generated_pods_agree_between_engines,
        engines_agree_on_resizes,
        native_policies_agree_with_the_engine_on_every_fixture,
        native_policies_bound_their_cost,
        another_mutating_policy_changes_the_limit,
        webhook_down_follows_the_failure_policy,
        escaped_pods_are_counted_and_drop_to_zero_when_recreated,
        cluster_wide_background_audit_leaves_out_what_the_webhook_leaves_out,
    ];
    let (passed, failed) = run_scenarios(&mut env, all, &filter, Duration::from_secs(300)).await;
    env.stop(failed > 0);
    println!(
        "end-to-end suite took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
