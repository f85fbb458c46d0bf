//! The lab (`make lab`): the published experiment on the node of the node suite, with the
//! webhook installed by its chart. Go's number, the minimal limit with Go's defaults, and
//! the matrix of limits × {Go's defaults, the webhook's injection}; see docs/lab.md.
//!
//! A benchmark, not a test: `cargo bench --bench lab` runs it (root; `make lab` builds
//! Kubernetes, helm and the images first). Under `cargo test` it does nothing; the node
//! suite runs one cell of it instead. Like the node suite it runs twice: outside it starts
//! the node and always stops it; inside the node's network namespace (`--in-node DIR`) it
//! installs the chart and measures.
//!
//! Output: the tables on stdout and in `LAB_OUT` (default `target/lab`): `lab.md`,
//! `lab.json` (every run), `lab.svg`. `LAB_PUBLISH=1` also writes them into docs/lab.md
//! and docs/lab.svg (the reference service only).

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../tests/cluster/mod.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/e2e_node/install.rs"]
mod install;
// Its one-cell smoke run is the node suite's.
#[allow(dead_code)]
#[path = "../tests/e2e_node/lab/mod.rs"]
mod lab;
#[allow(dead_code)]
#[path = "../tests/e2e_node/node.rs"]
mod node;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use lab::{Lab, Plan, Settings};
use node::NodeEnv;

/// The whole lab inside the namespace: the chart's installation and every run.
const LAB_DEADLINE: Duration = Duration::from_secs(90 * 60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--in-node") {
        let dir = PathBuf::from(args.get(i + 1).cloned().unwrap_or_default());
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        return match runtime.block_on(inside(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(i) = args.iter().position(|a| a == "--render") {
        // Renders a lab.json again (after a change to the table or the plot).
        let json = PathBuf::from(args.get(i + 1).cloned().unwrap_or_default());
        return match render(&json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("lab: a benchmark (`make lab`); the node suite runs one cell of it");
        return ExitCode::SUCCESS;
    }
    outside()
}

fn publish() -> bool {
    std::env::var("LAB_PUBLISH").is_ok_and(|v| v == "1")
}

/// Starts the node, runs the lab inside it, stops the node.
fn outside() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if publish() && !settings.is_reference() {
        eprintln!("error: PUBLISH=1 writes docs/lab.md, for the reference service only");
        return ExitCode::FAILURE;
    }
    let needs = match node::Needs::find().and_then(|n| settings.check_files().map(|()| n)) {
        Ok(needs) => needs,
        Err(why) => {
            if cluster::ci() {
                eprintln!("error: {why:#}");
                return ExitCode::FAILURE;
            }
            println!("skipping the lab: {why:#}");
            return ExitCode::SUCCESS;
        }
    };
    let before = lab::loadavg();
    println!(
        "lab: load average before the node starts: {}",
        before.map_or("?".to_owned(), |l| format!("{l:.2}"))
    );
    let started = Instant::now();
    let dir = match node::start(&needs) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: failed to start the node: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(l) = before {
        // For the report, which the lab writes inside.
        let _ = std::fs::write(dir.join("lab.loadavg"), l.to_string());
    }
    let ok = node::run_inside(&dir, &[], LAB_DEADLINE);
    let mut ok = ok;
    if let Err(e) = node::stop(&dir, !ok, None) {
        eprintln!("error: {e:#}");
        ok = false;
    }
    println!("lab took {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Installs the chart, runs the full plan, writes the results.
async fn inside(dir: PathBuf) -> Result<()> {
    let mut env = NodeEnv::connect(dir).await?;
    install::the_chart_installs_from_its_own_image(&mut env)
        .await
        .context("failed to install the chart")?;
    let lab = Lab::new(Settings::from_env()?)?;
    let report = lab.measure(&env, Plan::Full).await?;
    let out = std::env::var_os("LAB_OUT").map_or_else(lab::default_out, PathBuf::from);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("lab.json"), serde_json::to_string_pretty(&report)?)?;
    write(&report, &out)
}

/// Writes lab.md and lab.svg next to lab.json, prints the tables, and publishes them with
/// LAB_PUBLISH=1.
fn write(report: &lab::Report, out: &Path) -> Result<()> {
    let md = lab::markdown(report);
    let svg = lab::plot(report);
    std::fs::write(out.join("lab.md"), &md)?;
    std::fs::write(out.join("lab.svg"), &svg)?;
    println!("\n{md}");
    println!("lab: results in {}", out.display());
    if publish() {
        let docs = Path::new(cluster::ROOT).join("docs");
        ensure!(
            report.settings.is_reference(),
            "PUBLISH=1 is for the reference service"
        );
        lab::report::publish(&docs, &md, &svg)?;
        println!("lab: published to {}", docs.display());
    }
    Ok(())
}

/// Renders a lab.json again: its lab.md and lab.svg, beside it.
fn render(json: &Path) -> Result<()> {
    let text = std::fs::read_to_string(json)
        .with_context(|| format!("failed to read {}", json.display()))?;
    let report: lab::Report = serde_json::from_str(&text)?;
    write(&report, json.parent().context("a directory")?)
}
