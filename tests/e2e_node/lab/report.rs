//! What a lab run measured, summarised: the table laid out like the experiment's, with the
//! published figures beside it, per-cell details, and the machine it ran on.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Bisection, Cell, Config, GoNumber, Settings};
use crate::node::NodeEnv;

/// The experiment's figures (Ardan Labs, "Kubernetes Memory Limits and Go"): per row of
/// the matrix, the limit in MiB and req/s without and with GOMEMLIMIT + GOGC=off.
pub(crate) const PUBLISHED: [(&str, u64, Option<f64>, f64); 5] = [
    ("minimal", 18, Some(28.4), 29.2),
    ("Go's number", 23, Some(29.8), 33.4),
    ("2 × minimal", 36, Some(28.3), 35.4),
    ("4 × minimal", 72, Some(29.3), 35.9),
    ("below minimal", 13, None, 9.4),
];

/// The machine and the cluster the lab ran on.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) memory_gib: f64,
    pub(crate) kernel: String,
    pub(crate) cgroup: String,
    pub(crate) kubelet: String,
    pub(crate) runtime: String,
}

impl Machine {
    fn read(env: &NodeEnv) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let node = env.get_json(&["node", env.var("NODE_NAME")]).ok();
        let info = |key: &str| {
            node.as_ref()
                .and_then(|n| n["status"]["nodeInfo"][key].as_str())
                .unwrap_or("?")
                .to_owned()
        };
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: kib / (1 << 20) as f64,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cgroup: if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
                "v1"
            } else {
                "v2"
            }
            .to_owned(),
            kubelet: info("kubeletVersion"),
            runtime: info("containerRuntimeVersion"),
        }
    }
}

/// Everything one lab run measured (`lab.json`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Report {
    pub(crate) date: String,
    pub(crate) machine: Machine,
    pub(crate) settings: Settings,
    pub(crate) go_number: Option<GoNumber>,
    pub(crate) bisection: Option<Bisection>,
    pub(crate) cells: Vec<Cell>,
    pub(crate) seconds: f64,
    /// The 1-minute load average before the node started (written by `benches/lab.rs` into
    /// the node's directory), and at the start of every run.
    pub(crate) loadavg_before: Option<f64>,
    pub(crate) loadavg_during: Vec<f64>,
}

impl Report {
    pub(crate) fn new(env: &NodeEnv, settings: &Settings) -> Report {
        let now = time::OffsetDateTime::now_utc();
        Report {
            date: format!(
                "{}-{:02}-{:02}",
                now.year(),
                u8::from(now.month()),
                now.day()
            ),
            machine: Machine::read(env),
            settings: settings.clone(),
            go_number: None,
            bisection: None,
            cells: vec![],
            seconds: 0.0,
            loadavg_before: std::fs::read_to_string(env.dir.join("lab.loadavg"))
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            loadavg_during: vec![],
        }
    }

    pub(crate) fn cell(&self, row: &str, config: Config) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.row == row && c.config == config)
    }
}

pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

pub(crate) fn median_u64(values: &[u64]) -> Option<u64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// A cell's runs, summarised.
pub(crate) struct Summary {
    pub(crate) runs: usize,
    pub(crate) survived: usize,
    pub(crate) oom: usize,
    pub(crate) restarts: u64,
    pub(crate) errors: u64,
    /// Over the runs that survived.
    pub(crate) rps: Option<f64>,
    pub(crate) rps_min: Option<f64>,
    pub(crate) rps_max: Option<f64>,
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) max_ms: Option<f64>,
    pub(crate) gcs: Option<u64>,
    pub(crate) sys: Option<u64>,
    pub(crate) peak: Option<u64>,
}

impl Summary {
    pub(crate) fn of(cell: &Cell) -> Summary {
        let ok: Vec<_> = cell.runs.iter().filter(|r| r.survived).collect();
        let loads: Vec<_> = ok.iter().filter_map(|r| r.load.as_ref()).collect();
        let rps: Vec<f64> = loads.iter().map(|l| l.rps).collect();
        let after: Vec<_> = ok.iter().filter_map(|r| r.after.as_ref()).collect();
        Summary {
            runs: cell.runs.len(),
            survived: ok.len(),
            oom: cell.runs.iter().filter(|r| r.oom_killed).count(),
            restarts: cell.runs.iter().map(|r| r.restarts).sum(),
            errors: cell
                .runs
                .iter()
                .filter_map(|r| r.load.as_ref())
                .map(|l| l.errors)
                .sum(),
            rps: median(&rps),
            rps_min: rps.iter().copied().reduce(f64::min),
            rps_max: rps.iter().copied().reduce(f64::max),
            p50: median(&loads.iter().map(|l| l.p50_ms).collect::<Vec<_>>()),
            p99: median(&loads.iter().map(|l| l.p99_ms).collect::<Vec<_>>()),
            max_ms: loads.iter().map(|l| l.max_ms).reduce(f64::max),
            gcs: median_u64(&after.iter().map(|m| m.num_gc).collect::<Vec<_>>()),
            sys: median_u64(&after.iter().map(|m| m.sys).collect::<Vec<_>>()),
            peak: cell.runs.iter().filter_map(|r| r.peak_bytes).max(),
        }
    }
}

/// The median over rounds of injected ÷ defaults req/s at one limit, counting the rounds
/// in which both survived.
pub(crate) fn paired_ratio(report: &Report, row: &str) -> Option<f64> {
    let d = report.cell(row, Config::Defaults)?;
    let i = report.cell(row, Config::Injected)?;
    let ratios: Vec<f64> = d
        .runs
        .iter()
        .zip(&i.runs)
        .filter(|(a, b)| a.survived && b.survived)
        .filter_map(|(a, b)| Some(b.load.as_ref()?.rps / a.load.as_ref()?.rps))
        .collect();
    median(&ratios)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

/// "1043", with "(OOM 1/3)" when runs were OOMKilled, "—" when none survived.
fn rps_cell(s: &Summary) -> String {
    let mut text = s.rps.map_or("—".to_owned(), |r| format!("{r:.0}"));
    if s.oom > 0 {
        text.push_str(&format!(" (OOMKilled {}/{})", s.oom, s.runs));
    } else if s.survived < s.runs {
        text.push_str(&format!(" ({}/{} failed)", s.runs - s.survived, s.runs));
    }
    text
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".to_owned(), |v| format!("{v:.digits$}"))
}

/// The lab's results in Markdown: what ran where, Go's number, the bisection, the table
/// beside the published one, and the details per cell.
pub(crate) fn markdown(r: &Report) -> String {
    let mut md = String::new();
    let m = &r.machine;
    let s = &r.settings;
    let during = (
        r.loadavg_during.iter().copied().reduce(f64::min),
        r.loadavg_during.iter().copied().reduce(f64::max),
    );
    let _ = writeln!(
        md,
        "Measured on {}: {}, {} cores, {:.0} GiB, Linux {}, cgroup {}; kubelet {}, {}. \
         Load average (1 min) {} before the node started, {} during the runs (the lab's own \
         service and load generator included). The lab took {}.\n",
        r.date,
        m.cpu,
        m.cores,
        m.memory_gib,
        m.kernel,
        m.cgroup,
        m.kubelet,
        m.runtime,
        opt(r.loadavg_before, 2),
        match during {
            (Some(lo), Some(hi)) => format!("{lo:.2}–{hi:.2}"),
            _ => "—".to_owned(),
        },
        if r.seconds < 120.0 {
            format!("{:.0} s", r.seconds)
        } else {
            format!("{:.0} min", r.seconds / 60.0)
        }
    );
    let runtime = r
        .cells
        .iter()
        .flat_map(|c| &c.runs)
        .find_map(|run| run.after.clone())
        .and_then(|m| {
            Some(format!(
                " ({}, GOMAXPROCS {})",
                m.go_version?, m.gomaxprocs?
            ))
        });
    let _ = writeln!(
        md,
        "Service `{}`{}{}, CPU {} (request = limit) in every run; load: `{} {}{}`, {} requests \
         at concurrency {} per run, from a process in the node's network namespace to the \
         pod's IP; {} run{} per bisection step and per cell.\n",
        s.image,
        if s.args.is_empty() {
            String::new()
        } else {
            format!(" `{}`", s.args.join(" "))
        },
        runtime.unwrap_or_default(),
        s.cpu.as_deref().unwrap_or("unlimited"),
        s.load.method,
        s.load.path,
        s.load
            .body
            .as_ref()
            .map_or(String::new(), |b| format!(" {b}")),
        s.requests,
        s.concurrency,
        s.repeats,
        if s.repeats == 1 { "" } else { "s" },
    );

    if let Some(go) = &r.go_number {
        let alive: Vec<_> = go.runs.iter().filter(|r| r.survived).collect();
        let med = |f: &dyn Fn(&super::run::MemStats) -> u64, idle: bool| {
            let v: Vec<u64> = alive
                .iter()
                .filter_map(|r| {
                    if idle {
                        r.idle.as_ref()
                    } else {
                        r.after.as_ref()
                    }
                })
                .map(f)
                .collect();
            median_u64(&v).map_or("—".to_owned(), mib)
        };
        let rps = median(
            &alive
                .iter()
                .filter_map(|r| Some(r.load.as_ref()?.rps))
                .collect::<Vec<_>>(),
        );
        let figures = if alive.iter().any(|r| r.after.is_some()) {
            format!(
                "idle HeapAlloc {}, HeapSys {}, Sys {} MiB; after the load HeapAlloc {}, \
                 HeapSys {}, Sys {} MiB",
                med(&|m| m.heap_alloc, true),
                med(&|m| m.heap_sys, true),
                med(&|m| m.sys, true),
                med(&|m| m.heap_alloc, false),
                med(&|m| m.heap_sys, false),
                med(&|m| m.sys, false),
            )
        } else {
            "no runtime metrics".to_owned()
        };
        let _ = writeln!(
            md,
            "**Go's number** (no memory limit, median of {} run{}): {figures}, {} req/s. \
             Go's number ({}, rounded up): **{} MiB**. Published: idle 3, 8, 13 MiB; after \
             the load 7, 16, 23 MiB, 29.6 req/s.\n",
            go.runs.len(),
            plural(go.runs.len()),
            opt(rps, 0),
            go.source,
            go.mib,
        );
    }
    if let Some(b) = &r.bisection {
        let failing = match b.failing_mib {
            Some(f) => {
                let step = b.steps.iter().find(|s| s.limit_mib == f && !s.survived);
                let (oom, runs) = step.map_or((0, 0), |s| {
                    (s.runs.iter().filter(|r| r.oom_killed).count(), s.runs.len())
                });
                format!(
                    "at {f} MiB {}",
                    if oom > 0 {
                        format!(
                            "it was first OOMKilled ({oom} of {runs} run{})",
                            plural(runs)
                        )
                    } else {
                        "it first failed without an OOMKill".to_owned()
                    }
                )
            }
            None => format!("no limit down to the floor ({} MiB) failed", b.floor_mib),
        };
        let steps: Vec<String> = b
            .steps
            .iter()
            .map(|st| {
                format!(
                    "{} MiB {}",
                    st.limit_mib,
                    if st.survived {
                        format!("✓{}", st.runs.len())
                    } else {
                        let oom = st.runs.iter().any(|r| r.oom_killed);
                        format!(
                            "✗ ({} in run {})",
                            if oom { "OOMKilled" } else { "failed" },
                            st.runs.len()
                        )
                    }
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "**Minimal limit with Go's defaults: {} MiB**; {failing}. Published: 18 MiB, first \
             OOMKilled at 17 MiB. Bisection (✓n: n of n runs survived; a step stops at its first \
             failure): {}.\n",
            b.minimal_mib,
            steps.join(", ")
        );
    }

    if r.go_number.is_some() {
        md.push_str(
            "| limit | this lab | Go defaults, req/s | GOMEMLIMIT + GOGC=off (webhook), req/s | \
             with ÷ without | published | no knobs, req/s | GOMEMLIMIT + GOGC=off, req/s | \
             with ÷ without |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for (row, pub_mib, pub_without, pub_with) in PUBLISHED {
            let Some(inj) = r.cell(row, Config::Injected) else {
                continue;
            };
            let without = r
                .cell(row, Config::Defaults)
                .map_or("—".to_owned(), |c| rps_cell(&Summary::of(c)));
            let _ = writeln!(
                md,
                "| {row} | {} MiB | {without} | {} | {} | {pub_mib} MiB | {} | {pub_with} | {} |",
                inj.limit_mib,
                rps_cell(&Summary::of(inj)),
                opt(paired_ratio(r, row), 2),
                opt(pub_without, 1),
                opt(pub_without.map(|w| pub_with / w), 2),
            );
        }
        let _ = writeln!(
            md,
            "\nreq/s: the median of the runs that survived; \"OOMKilled k/n\": k of the n runs \
             were OOMKilled. with ÷ without: the median over the {} round{} of the two \
             configurations' req/s at that limit, run back to back.\n",
            s.repeats,
            plural(s.repeats as usize)
        );
    }

    md.push_str(
        "| row | limit | configuration | runs | OOMKilled | restarts | errors | req/s median \
         (min–max) | p50 ms | p99 ms | max ms | GCs | Sys after, MiB | peak, MiB | GOMEMLIMIT |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for cell in &r.cells {
        let sm = Summary::of(cell);
        let _ = writeln!(
            md,
            "| {} | {} MiB | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell.row,
            cell.limit_mib,
            cell.config.label(),
            sm.runs,
            sm.oom,
            sm.restarts,
            sm.errors,
            match (sm.rps, sm.rps_min, sm.rps_max) {
                (Some(m), Some(lo), Some(hi)) => format!("{m:.0} ({lo:.0}–{hi:.0})"),
                _ => "—".to_owned(),
            },
            opt(sm.p50, 2),
            opt(sm.p99, 2),
            opt(sm.max_ms, 1),
            sm.gcs.map_or("—".to_owned(), |g| g.to_string()),
            sm.sys.map_or("—".to_owned(), mib),
            sm.peak.map_or("—".to_owned(), mib),
            cell.runs
                .first()
                .and_then(|r| r.gomemlimit.clone())
                .unwrap_or_else(|| "—".to_owned()),
        );
    }
    md
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Markers around the generated part of docs/lab.md.
pub(crate) const BEGIN: &str = "<!-- lab results: generated by `make lab PUBLISH=1` -->";
pub(crate) const END: &str = "<!-- end of lab results -->";

/// Writes the results into docs/lab.md (between the markers) and the plot to docs/lab.svg.
pub(crate) fn publish(docs: &Path, md: &str, svg: &str) -> Result<()> {
    let path = docs.join("lab.md");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let start = text
        .find(BEGIN)
        .with_context(|| format!("no {BEGIN} in {}", path.display()))?;
    let end = text
        .find(END)
        .filter(|&e| e > start)
        .with_context(|| format!("no {END} after the start marker in {}", path.display()))?;
    let updated = format!("{}{BEGIN}\n\n{md}\n{}", &text[..start], &text[end..]);
    std::fs::write(&path, updated)?;
    std::fs::write(docs.join("lab.svg"), svg)?;
    Ok(())
}
