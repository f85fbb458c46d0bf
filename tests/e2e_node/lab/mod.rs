//! The lab: the published experiment repeated on the node, with the webhook in the loop.
//!
//! A Go HTTP service (`workloads/sales`, or the user's image) runs as a pod, one pod at a
//! time, under a memory limit; a load generator (`workloads/load`, a process in the node's
//! network namespace that talks to the pod's IP) sends it a fixed number of requests at a
//! fixed concurrency. A run records whether the service survived (no OOMKill, no restart,
//! no error during the load), req/s and latencies, and the runtime's memory figures read
//! from its metrics endpoint after the load.
//!
//! The full plan (`make lab`, `benches/lab.rs`): "Go's number" (`Sys` after a load with no
//! limit), the minimal limit at which Go's defaults survive (bisection in 1 MiB steps), then
//! the matrix {minimal, Go's number, 2 × minimal, 4 × minimal} × {Go's defaults, the
//! webhook's injection}, plus one limit below the minimal with the injection. The node
//! suite runs a one-cell plan of it, so that the lab cannot rot.

// A benchmark's tooling: its report and plot writers read as the documents they write, top
// to bottom. The package's limit on function length is for the product's code.
#![allow(clippy::too_many_lines)]

pub(crate) mod report;
mod run;
mod svg;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cluster::{ROOT, ci, sh};
use crate::node::NodeEnv;

pub(crate) use report::{Report, markdown};
pub(crate) use run::Run;
pub(crate) use svg::plot;

/// The reference service, built by `make images`.
pub(crate) const SALES_IMAGE: &str = "localhost/gomemlimit-lab/sales:1";
/// What the load generator sends to it by default: a JSON query per request, `{i}` being
/// the request's number.
pub(crate) const SALES_LOAD: &str = r#"POST /v1/sales/search {"customerId":{i},"limit":3}"#;
/// Namespaces of the two configurations.
const NS_DEFAULTS: &str = "lab-defaults";
const NS_INJECTED: &str = "lab-injected";

/// How the Go runtime in the pod is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub(crate) enum Config {
    /// A namespace that is not opted in: the pod as written, Go's defaults.
    Defaults,
    /// An opted-in namespace (`gomemlimit.io/inject=enabled`): the webhook's request =
    /// limit, `GOMEMLIMIT` from the downward API and `GOGC=off`.
    Injected,
}

impl Config {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Config::Defaults => "Go defaults",
            Config::Injected => "GOMEMLIMIT + GOGC=off (webhook)",
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            Config::Defaults => NS_DEFAULTS,
            Config::Injected => NS_INJECTED,
        }
    }
}

/// The request the load generator sends: `METHOD PATH [BODY]`, or a bare `PATH` (GET).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub(crate) struct Load {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) body: Option<String>,
}

impl Load {
    pub(crate) fn parse(text: &str) -> Result<Load> {
        let text = text.trim();
        let (method, rest) = match text.split_once(char::is_whitespace) {
            Some((m, rest)) if !m.starts_with('/') => (m.to_ascii_uppercase(), rest.trim()),
            _ => ("GET".to_owned(), text),
        };
        let (path, body) = match rest.split_once(char::is_whitespace) {
            Some((p, b)) => (p, Some(b.trim().to_owned())),
            None => (rest, None),
        };
        ensure!(
            path.starts_with('/'),
            "LOAD {text:?}: want `METHOD /PATH [BODY]`, e.g. `GET /api/items?id={{i}}`"
        );
        ensure!(
            method.chars().all(|c| c.is_ascii_uppercase()),
            "LOAD {text:?}: bad method {method:?}"
        );
        Ok(Load {
            method,
            path: path.to_owned(),
            body,
        })
    }
}

/// What the lab runs and how hard; from `LAB_*` variables (what `make lab IMAGE=… LOAD=…`
/// sets), each with a default for the reference service.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Settings {
    /// The image of the service's only container (`IMAGE`).
    pub(crate) image: String,
    /// The archive imported into the node's containerd before the first pod
    /// (`IMAGE_ARCHIVE`: `docker save` or an OCI archive); nothing is ever pulled.
    pub(crate) image_archive: PathBuf,
    /// Container arguments (`ARGS`, split at spaces).
    pub(crate) args: Vec<String>,
    /// The port the service listens on (`PORT`).
    pub(crate) port: u16,
    /// The expvar-style metrics path (`METRICS`; `none` when the service has none).
    pub(crate) metrics: Option<String>,
    pub(crate) load: Load,
    /// Requests per load (`REQUESTS`) and how many at a time (`CONCURRENCY`).
    pub(crate) requests: u32,
    pub(crate) concurrency: u32,
    /// Runs per step of the bisection and per cell of the matrix (`REPEATS`).
    pub(crate) repeats: u32,
    /// The pod's CPU request and limit (`CPU`; `none` for neither), the same in every run.
    pub(crate) cpu: Option<String>,
    /// The lowest limit the bisection considers, assumed to fail (`FLOOR_MIB`).
    pub(crate) floor_mib: u64,
    /// The load generator (`workloads/load`, built by `make images`).
    pub(crate) load_bin: PathBuf,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match var(name) {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        None => Ok(default),
    }
}

impl Settings {
    /// The reference service with the lab's defaults.
    pub(crate) fn reference() -> Settings {
        let root = Path::new(ROOT);
        Settings {
            image: SALES_IMAGE.to_owned(),
            image_archive: images_dir().join("sales.tar"),
            args: vec![],
            port: 8080,
            metrics: Some("/debug/vars".to_owned()),
            load: Load::parse(SALES_LOAD).expect("the default load parses"),
            requests: 5000,
            concurrency: 10,
            repeats: 3,
            cpu: Some("1".to_owned()),
            floor_mib: 4,
            load_bin: root.join(".cache/bin/load"),
        }
    }

    /// The reference settings, overridden by `LAB_IMAGE`, `LAB_IMAGE_ARCHIVE`, `LAB_ARGS`,
    /// `LAB_PORT`, `LAB_METRICS`, `LAB_LOAD`, `LAB_REQUESTS`, `LAB_CONCURRENCY`,
    /// `LAB_REPEATS`, `LAB_CPU`, `LAB_FLOOR_MIB` and `LAB_LOAD_BIN`.
    pub(crate) fn from_env() -> Result<Settings> {
        let mut s = Settings::reference();
        if let Some(image) = var("LAB_IMAGE") {
            if image != SALES_IMAGE {
                s.image_archive = var("LAB_IMAGE_ARCHIVE").map(PathBuf::from).context(
                    "IMAGE_ARCHIVE is needed with IMAGE: the node pulls nothing, so the image \
                     comes from an archive (`docker save IMAGE -o FILE`, or `skopeo copy \
                     docker://IMAGE docker-archive:FILE:IMAGE`)",
                )?;
                s.load = Load::parse(&var("LAB_LOAD").context(
                    "LOAD is needed with IMAGE: the request to send, e.g. LOAD='GET /api/items'",
                )?)?;
                s.args = vec![];
            }
            s.image = image;
        }
        if let Some(archive) = var("LAB_IMAGE_ARCHIVE") {
            s.image_archive = PathBuf::from(archive);
        }
        if let Some(load) = var("LAB_LOAD") {
            s.load = Load::parse(&load)?;
        }
        if let Some(args) = var("LAB_ARGS") {
            s.args = args.split_whitespace().map(str::to_owned).collect();
        }
        if let Some(metrics) = var("LAB_METRICS") {
            s.metrics = (metrics != "none").then_some(metrics);
        }
        if let Some(cpu) = var("LAB_CPU") {
            s.cpu = (cpu != "none").then_some(cpu);
        }
        if let Some(bin) = var("LAB_LOAD_BIN") {
            s.load_bin = PathBuf::from(bin);
        }
        s.port = number("LAB_PORT", s.port)?;
        s.requests = number("LAB_REQUESTS", s.requests)?;
        s.concurrency = number("LAB_CONCURRENCY", s.concurrency)?;
        s.repeats = number("LAB_REPEATS", s.repeats)?;
        s.floor_mib = number("LAB_FLOOR_MIB", s.floor_mib)?;
        ensure!(
            s.requests >= 1 && s.concurrency >= 1,
            "REQUESTS and CONCURRENCY must be ≥ 1"
        );
        ensure!(
            (1..=10).contains(&s.repeats),
            "REPEATS must be within 1..=10"
        );
        ensure!(s.floor_mib >= 1, "FLOOR_MIB must be ≥ 1");
        if let Some(m) = &s.metrics {
            ensure!(m.starts_with('/'), "METRICS {m:?} must be a path");
        }
        Ok(s)
    }

    /// The files the lab needs before the node starts.
    pub(crate) fn check_files(&self) -> Result<()> {
        ensure!(
            self.load_bin.exists(),
            "the load generator {} is missing; run `make images`",
            self.load_bin.display()
        );
        ensure!(
            self.image_archive.exists(),
            "the image archive {} is missing; run `make images`",
            self.image_archive.display()
        );
        Ok(())
    }

    pub(crate) fn is_reference(&self) -> bool {
        self.image == SALES_IMAGE
    }
}

fn images_dir() -> PathBuf {
    std::env::var_os("IMAGES_DIR")
        .map_or_else(|| Path::new(ROOT).join(".cache/images"), PathBuf::from)
}

/// What to run.
pub(crate) enum Plan {
    /// Go's number, the bisection, the matrix and the limit below the minimal.
    Full,
    /// One cell (for the node suite), `settings.repeats` runs of it.
    OneCell { limit_mib: u64, config: Config },
}

/// The lab's state while it runs.
pub(crate) struct Lab {
    pub(crate) settings: Settings,
    client: reqwest::Client,
    seq: AtomicU32,
    /// 1-minute load average at the start of every run.
    loadavg: Mutex<Vec<f64>>,
}

/// A limit of the matrix: its row name and MiB.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Cell {
    pub(crate) row: String,
    pub(crate) limit_mib: u64,
    pub(crate) config: Config,
    pub(crate) runs: Vec<Run>,
}

/// Go's number: `Sys` after a load without a memory limit (or the pod's peak memory when
/// the service has no metrics), the median of the runs.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct GoNumber {
    pub(crate) runs: Vec<Run>,
    pub(crate) bytes: u64,
    pub(crate) mib: u64,
    pub(crate) source: String,
}

/// One limit tried by the bisection: the runs until the first that did not survive.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Step {
    pub(crate) limit_mib: u64,
    pub(crate) survived: bool,
    pub(crate) runs: Vec<Run>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Bisection {
    pub(crate) floor_mib: u64,
    pub(crate) steps: Vec<Step>,
    /// The lowest limit at which every run survived.
    pub(crate) minimal_mib: u64,
    /// The highest limit below it at which a run did not survive (minimal − 1 MiB), when
    /// it was tried (not when the search ran down to the floor).
    pub(crate) failing_mib: Option<u64>,
}

/// At most this many doublings of the upper bound when Go's number itself does not survive.
const MAX_DOUBLINGS: u32 = 6;
/// The bisection's range never exceeds 4 GiB, so it takes at most 12 steps.
const MAX_LIMIT_MIB: u64 = 4096;

impl Lab {
    pub(crate) fn new(settings: Settings) -> Result<Lab> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Lab {
            settings,
            client,
            seq: AtomicU32::new(1),
            loadavg: Mutex::new(Vec::new()),
        })
    }

    /// Imports the image and creates the two namespaces; waits until the webhook mutates
    /// pods of the opted-in one.
    async fn prepare(&self, env: &NodeEnv) -> Result<()> {
        let t = Instant::now();
        let out = sh(
            std::process::Command::new(Path::new(ROOT).join("cluster/node.sh"))
                .arg("import")
                .arg(&env.dir)
                .arg(&self.settings.image_archive),
        )?;
        ensure!(
            out.status.success(),
            "failed to import {}: {}",
            self.settings.image_archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        env.namespace(NS_DEFAULTS, json!({})).await?;
        env.namespace(NS_INJECTED, json!({"gomemlimit.io/inject": "enabled"}))
            .await?;
        env.wait_webhook_active(NS_INJECTED, true).await?;
        println!(
            "lab: {} imported, namespaces {NS_DEFAULTS} (not opted in) and {NS_INJECTED} (opted in) \
             ready in {:.1}s",
            self.settings.image,
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Runs a plan; returns everything it measured.
    pub(crate) async fn measure(&self, env: &NodeEnv, plan: Plan) -> Result<Report> {
        let started = Instant::now();
        self.prepare(env).await?;
        let mut report = Report::new(env, &self.settings);
        match plan {
            Plan::OneCell { limit_mib, config } => {
                let mut runs = Vec::new();
                for _ in 0..self.settings.repeats {
                    runs.push(self.run(env, config, Some(limit_mib)).await?);
                }
                report.cells.push(Cell {
                    row: "one cell".to_owned(),
                    limit_mib,
                    config,
                    runs,
                });
            }
            Plan::Full => {
                let go = self.go_number(env).await?;
                let bisection = self.bisect(env, go.mib).await?;
                report.cells = self
                    .matrix(env, bisection.minimal_mib, go.mib, bisection.floor_mib)
                    .await?;
                report.go_number = Some(go);
                report.bisection = Some(bisection);
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        report.loadavg_during = self.loadavg.lock().expect("loadavg").clone();
        Ok(report)
    }

    async fn go_number(&self, env: &NodeEnv) -> Result<GoNumber> {
        println!(
            "lab: Go's number: {} load(s) without a memory limit",
            self.settings.repeats
        );
        let mut runs = Vec::new();
        for _ in 0..self.settings.repeats {
            runs.push(self.run(env, Config::Defaults, None).await?);
        }
        let alive: Vec<&Run> = runs.iter().filter(|r| r.survived).collect();
        ensure!(
            !alive.is_empty(),
            "the service did not survive a load without a memory limit: {:?}",
            runs.iter().map(|r| &r.failure).collect::<Vec<_>>()
        );
        let sys: Vec<u64> = alive
            .iter()
            .filter_map(|r| r.after.as_ref().map(|m| m.sys))
            .collect();
        let (values, source) = if sys.len() == alive.len() {
            (sys, "Sys")
        } else {
            let peaks: Vec<u64> = alive.iter().filter_map(|r| r.peak_bytes).collect();
            ensure!(
                peaks.len() == alive.len(),
                "neither metrics ({:?}) nor the pod's cgroup gave the memory used",
                self.settings.metrics
            );
            (peaks, "the pod's peak memory")
        };
        let bytes = report::median_u64(&values).context("no value")?;
        let mib = bytes.div_ceil(1 << 20);
        println!("lab: Go's number: {source} {mib} MiB ({bytes} bytes)");
        Ok(GoNumber {
            runs,
            bytes,
            mib,
            source: source.to_owned(),
        })
    }

    /// A step of the bisection: up to `repeats` runs with Go's defaults, stopping at the
    /// first that does not survive.
    async fn step(&self, env: &NodeEnv, limit_mib: u64) -> Result<Step> {
        let mut runs = Vec::new();
        for _ in 0..self.settings.repeats {
            let run = self.run(env, Config::Defaults, Some(limit_mib)).await?;
            let survived = run.survived;
            runs.push(run);
            if !survived {
                break;
            }
        }
        let survived = runs.iter().all(|r| r.survived);
        println!(
            "lab: bisection: {limit_mib} MiB {}",
            if survived { "survives" } else { "fails" }
        );
        Ok(Step {
            limit_mib,
            survived,
            runs,
        })
    }

    /// The lowest limit (in MiB) at which Go's defaults survive every run of a step. The
    /// upper bound is Go's number, doubled while it fails (bounded); the lower bound is the
    /// floor, assumed to fail. Assumes that survival does not get worse with more memory.
    async fn bisect(&self, env: &NodeEnv, go_mib: u64) -> Result<Bisection> {
        let floor = self.settings.floor_mib;
        let mut steps = Vec::new();
        let mut hi = go_mib.max(floor + 1);
        let mut doublings = 0;
        loop {
            let step = self.step(env, hi).await?;
            let survived = step.survived;
            steps.push(step);
            if survived {
                break;
            }
            doublings += 1;
            if doublings > MAX_DOUBLINGS || hi * 2 > MAX_LIMIT_MIB {
                bail!("Go's defaults did not survive even at {hi} MiB");
            }
            hi *= 2;
        }
        let mut lo = steps
            .iter()
            .filter(|s| !s.survived)
            .map(|s| s.limit_mib)
            .max()
            .unwrap_or(floor);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let step = self.step(env, mid).await?;
            if step.survived {
                hi = mid;
            } else {
                lo = mid;
            }
            steps.push(step);
        }
        let failing_mib = steps
            .iter()
            .any(|s| s.limit_mib == lo && !s.survived)
            .then_some(lo);
        println!(
            "lab: minimal limit with Go's defaults: {hi} MiB; {}",
            match failing_mib {
                Some(f) => format!("{f} MiB fails"),
                None => format!("every limit down to the floor ({floor} MiB) was not tried"),
            }
        );
        Ok(Bisection {
            floor_mib: floor,
            steps,
            minimal_mib: hi,
            failing_mib,
        })
    }

    /// The matrix, in rounds: each round runs every cell once, the two configurations of a
    /// limit back to back (their order alternating between rounds), so that a change in
    /// the machine's load between rounds hits both sides of a ratio alike.
    async fn matrix(
        &self,
        env: &NodeEnv,
        minimal: u64,
        go_mib: u64,
        floor: u64,
    ) -> Result<Vec<Cell>> {
        let mut cells = Vec::new();
        for (row, limit_mib) in [
            ("minimal", minimal),
            ("Go's number", go_mib),
            ("2 × minimal", 2 * minimal),
            ("4 × minimal", 4 * minimal),
        ] {
            for config in [Config::Defaults, Config::Injected] {
                cells.push(Cell {
                    row: row.to_owned(),
                    limit_mib,
                    config,
                    runs: vec![],
                });
            }
        }
        let below = below_minimal(minimal, floor);
        if let Some(limit_mib) = below {
            cells.push(Cell {
                row: "below minimal".to_owned(),
                limit_mib,
                config: Config::Injected,
                runs: vec![],
            });
        }
        println!(
            "lab: matrix: {} cells × {} round(s)",
            cells.len(),
            self.settings.repeats
        );
        for round in 0..self.settings.repeats {
            let mut order: Vec<usize> = (0..cells.len()).collect();
            if round % 2 == 1 {
                // Swap each limit's pair: injected first in odd rounds.
                for pair in order.chunks_mut(2) {
                    if pair.len() == 2 && cells[pair[0]].row == cells[pair[1]].row {
                        pair.swap(0, 1);
                    }
                }
            }
            for i in order {
                let run = self
                    .run(env, cells[i].config, Some(cells[i].limit_mib))
                    .await?;
                cells[i].runs.push(run);
            }
        }
        Ok(cells)
    }

    fn next_name(&self) -> String {
        format!("lab-{:03}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    fn note_loadavg(&self) {
        if let Some(l) = loadavg() {
            self.loadavg.lock().expect("loadavg").push(l);
        }
    }
}

/// The experiment's "alive but slow" limit: 13 MiB against a minimal of 18 MiB, the same
/// ratio here, above the floor and below the minimal.
pub(crate) fn below_minimal(minimal: u64, floor: u64) -> Option<u64> {
    let below = (minimal * 13).div_ceil(18).max(floor + 1);
    (below < minimal).then_some(below)
}

/// The 1-minute load average.
pub(crate) fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The node suite's smoke run of the lab: one cell (the reference service under 64 MiB in
/// the opted-in namespace), one run with a short load, rendered into the table and the
/// plot. Skipped outside CI when the lab's files were not built.
pub(crate) async fn the_lab_runs_one_cell_with_the_webhook(env: &mut NodeEnv) -> Result<()> {
    let mut settings = Settings::reference();
    settings.requests = 300;
    settings.repeats = 1;
    if let Err(e) = settings.check_files() {
        if ci() {
            return Err(e);
        }
        println!("  skipped: {e:#}");
        return Ok(());
    }
    let lab = Lab::new(settings)?;
    let report = lab
        .measure(
            env,
            Plan::OneCell {
                limit_mib: 64,
                config: Config::Injected,
            },
        )
        .await?;
    let cell = &report.cells[0];
    let run = &cell.runs[0];
    ensure!(run.survived, "the one run did not survive: {run:?}");
    ensure!(
        run.gomemlimit.as_deref() == Some("downward API"),
        "the pod's GOMEMLIMIT: {:?}",
        run.gomemlimit
    );
    let load = run.load.as_ref().context("no load report")?;
    ensure!(
        load.ok == 300 && load.errors == 0 && load.rps > 0.0,
        "load: {load:?}"
    );
    ensure!(
        load.p50_ms <= load.p99_ms && load.p99_ms <= load.max_ms,
        "latencies out of order: {load:?}"
    );
    ensure!(
        (300.0..700.0).contains(&load.response_bytes),
        "response of {} bytes, not about 0.5 KB",
        load.response_bytes
    );
    let after = run.after.as_ref().context("no metrics after the load")?;
    ensure!(
        after.memory_limit == Some(64 << 20) && after.gc_percent == Some(-1),
        "the runtime's limit {:?} and GC percent {:?}",
        after.memory_limit,
        after.gc_percent
    );
    ensure!(
        after.num_gc >= 1 && after.sys > after.heap_alloc,
        "metrics: {after:?}"
    );
    let table = markdown(&report);
    ensure!(
        table.contains("| one cell | 64 MiB |"),
        "the table lacks the cell:\n{table}"
    );
    let svg = plot(&report);
    ensure!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("<circle"),
        "not a plot: {svg}"
    );
    println!(
        "  one cell, 64 MiB, injected: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} GCs, Sys {:.1} MiB",
        load.rps,
        load.p50_ms,
        load.p99_ms,
        after.num_gc,
        after.sys as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// The default output directory of `make lab`.
pub(crate) fn default_out() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(ROOT).join("target"), PathBuf::from)
        .join("lab")
}
