//! End-to-end tests on a real node: a one-node Kubernetes 1.37 (`cluster/node.sh`: the
//! control plane, kube-scheduler, a kubelet, containerd and runc, in a network namespace of
//! its own), the webhook installed by `helm install` from its own image, and Go workloads
//! run by the kubelet under real memory limits.
//!
//! Run with `make e2e-node` (root; builds Kubernetes, helm and the images first). Without
//! what it needs the suite fails under `CI=true` and is skipped (with a message) elsewhere.
//!
//! The process runs twice: the first (outside) starts the node, runs itself again inside
//! the node's network namespace with `--in-node DIR` (where the scenarios talk to the API
//! server and to pods), enforces an overall deadline on it, and always stops the node.

#[path = "../cluster/mod.rs"]
mod cluster;
mod experiment;
mod install;
// One cell of it here; the full plan is benches/lab.rs.
#[allow(dead_code)]
mod lab;
mod node;
mod resize;
mod rollout;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cluster::{Scenario, run_scenarios, scenarios};
use experiment::a_go_service_is_oomkilled_at_its_limit_and_survives_with_the_webhook;
use install::{
    an_upgrade_to_audit_reports_and_changes_nothing, the_chart_installs_from_its_own_image,
    the_node_is_ready,
};
use lab::the_lab_runs_one_cell_with_the_webhook;
use node::NodeEnv;
use resize::in_place_resizes_restart_or_are_refused;
use rollout::a_rolling_restart_admits_no_pod_unmutated;

/// The whole suite inside the namespace, scenarios included.
const SUITE_DEADLINE: Duration = Duration::from_secs(25 * 60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    if let Some(i) = args.iter().position(|a| a == "--in-node") {
        let dir = args.get(i + 1).cloned().unwrap_or_default();
        let filter: Vec<String> = filter.into_iter().filter(|f| *f != dir).collect();
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        return runtime.block_on(inside(dir.into(), filter));
    }
    outside(&filter)
}

/// Starts the node, runs the suite inside it, stops the node.
fn outside(filter: &[String]) -> ExitCode {
    let needs = match node::Needs::find() {
        Ok(needs) => needs,
        Err(why) => {
            if cluster::ci() {
                eprintln!("error: {why:#}");
                return ExitCode::FAILURE;
            }
            println!("skipping the node suite: {why:#}");
            return ExitCode::SUCCESS;
        }
    };
    let started = Instant::now();
    let sysctls = node::sysctls_alone();
    let dir = match node::start(&needs) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: failed to start the node: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = node::run_inside(&dir, filter, SUITE_DEADLINE);
    if let Err(e) = node::stop(&dir, !ok, sysctls.as_deref()) {
        eprintln!("error: {e:#}");
        ok = false;
    }
    println!("node suite took {:.1}s", started.elapsed().as_secs_f64());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The scenarios, in the node's network namespace.
async fn inside(dir: std::path::PathBuf, filter: Vec<String>) -> ExitCode {
    let mut env = match NodeEnv::connect(dir).await {
        Ok(env) => env,
        Err(e) => {
            eprintln!("error: failed to reach the node: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // In order: each builds on the one before (the chart installed, then used, then
    // upgraded).
    let all: &[(&str, Scenario<NodeEnv>)] = scenarios![
        the_node_is_ready,
        the_chart_installs_from_its_own_image,
        a_go_service_is_oomkilled_at_its_limit_and_survives_with_the_webhook,
        the_lab_runs_one_cell_with_the_webhook,
        a_rolling_restart_admits_no_pod_unmutated,
        in_place_resizes_restart_or_are_refused,
        an_upgrade_to_audit_reports_and_changes_nothing,
    ];
    let (passed, failed) = run_scenarios(&mut env, all, &filter, Duration::from_secs(420)).await;
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
