//! Figures with their targets, the machine they were measured on, and their two outputs:
//! a table for people and one JSON document for tools.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

/// A figure's target.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Target {
    /// The value must not exceed this.
    AtMost(f64),
}

/// One measured value.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Figure {
    /// Scenario.
    pub(crate) section: &'static str,
    /// What was measured.
    pub(crate) name: String,
    /// The value.
    pub(crate) value: f64,
    /// Its unit.
    pub(crate) unit: &'static str,
    /// The target, if the issue sets one.
    pub(crate) target: Option<Target>,
}

impl Figure {
    fn met(&self) -> Option<bool> {
        self.target.map(|Target::AtMost(limit)| self.value <= limit)
    }
}

/// Every figure of a run, in order.
#[derive(Debug, Default)]
pub(crate) struct Report {
    figures: Vec<Figure>,
    notes: Vec<String>,
}

impl Report {
    /// Adds a figure without a target.
    pub(crate) fn add(
        &mut self,
        section: &'static str,
        name: &str,
        value: f64,
        unit: &'static str,
    ) {
        self.figures.push(Figure {
            section,
            name: name.to_owned(),
            value,
            unit,
            target: None,
        });
    }

    /// Adds a figure with an upper bound.
    pub(crate) fn add_at_most(
        &mut self,
        section: &'static str,
        name: &str,
        value: f64,
        unit: &'static str,
        limit: f64,
    ) {
        self.figures.push(Figure {
            section,
            name: name.to_owned(),
            value,
            unit,
            target: Some(Target::AtMost(limit)),
        });
    }

    /// Adds a free-text note printed under the table.
    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Figures whose target was missed.
    pub(crate) fn missed(&self) -> Vec<&Figure> {
        self.figures
            .iter()
            .filter(|f| f.met() == Some(false))
            .collect()
    }

    /// The table.
    pub(crate) fn table(&self, machine: &Machine) -> String {
        let mut out = format!(
            "bench on {} cores ({}), kernel {}, {}, commit {}\n\n",
            machine.cores, machine.cpu, machine.kernel, machine.date, machine.commit
        );
        let width = self
            .figures
            .iter()
            .map(|f| f.name.len())
            .max()
            .unwrap_or(10)
            .max(10);
        out.push_str(&format!(
            "| {:<10} | {:<width$} | {:>12} | {:<6} | {:<10} |\n",
            "scenario", "figure", "value", "unit", "target"
        ));
        out.push_str(&format!(
            "|{}|{}|{}|{}|{}|\n",
            "-".repeat(12),
            "-".repeat(width + 2),
            "-".repeat(14),
            "-".repeat(8),
            "-".repeat(12)
        ));
        for f in &self.figures {
            let target = match (f.target, f.met()) {
                (Some(Target::AtMost(limit)), Some(met)) => {
                    format!("≤ {} {}", short(limit), if met { "ok" } else { "MISSED" })
                }
                _ => String::new(),
            };
            out.push_str(&format!(
                "| {:<10} | {:<width$} | {:>12} | {:<6} | {:<10} |\n",
                f.section,
                f.name,
                short(f.value),
                f.unit,
                target
            ));
        }
        for note in &self.notes {
            out.push_str(&format!("\n{note}"));
        }
        out
    }

    /// The JSON document.
    pub(crate) fn json(&self, machine: &Machine, args: &[String]) -> serde_json::Value {
        let figures: Vec<_> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "section": f.section, "name": f.name, "value": f.value, "unit": f.unit,
                    "target": f.target, "met": f.met(),
                })
            })
            .collect();
        json!({"machine": machine, "args": args, "figures": figures, "notes": self.notes})
    }
}

/// A number with as many digits as it deserves.
fn short(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 1000.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Milliseconds of a duration.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Mebibytes of KiB.
pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The `q` quantile (nearest rank) of sorted samples.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The machine a run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    /// Online CPUs.
    pub(crate) cores: usize,
    /// CPU model.
    pub(crate) cpu: String,
    /// `uname -r`.
    pub(crate) kernel: String,
    /// Total memory, MiB.
    pub(crate) memory_mib: u64,
    /// When (UTC).
    pub(crate) date: String,
    /// `git describe --always --dirty` of the source tree.
    pub(crate) commit: String,
    /// Load average (1 min) when the run started: other work on a shared machine.
    pub(crate) load_at_start: f64,
}

impl Machine {
    /// Reads the facts of this machine.
    pub(crate) fn detect() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown", |(_, m)| m.trim())
            .to_owned();
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        let commit = std::process::Command::new("git")
            .args([
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "describe",
                "--always",
                "--dirty",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(
                || "unknown".to_owned(),
                |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            );
        Self {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            memory_mib,
            date: jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
            commit,
            load_at_start: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(f64::NAN),
        }
    }
}
