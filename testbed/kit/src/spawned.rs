//! Release binaries under measurement as child processes: spawned with JSON logs, ready
//! when they log a given message, measured from `/proc`, stopped by signal. Shared by the
//! `bench` and `attest-load` harnesses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::procfs::{self, Usage};

/// How long a process may take to log that it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process whose JSON log line with `message == ready` was seen.
#[derive(Debug)]
pub struct Spawned {
    name: String,
    child: Child,
    pid: u32,
    ready_fields: HashMap<String, String>,
    /// When it was spawned.
    pub started: Instant,
    /// When it logged that it was ready.
    pub ready_at: Instant,
}

impl Spawned {
    /// Spawns `command` (stderr: JSON log lines) and waits for the line whose `message` is
    /// `ready`. Later warnings and errors are echoed with the process's name.
    pub async fn start(name: &str, command: &mut Command, ready: &str) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.as_std().get_program()))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let label = name.to_owned();
        let ready_fields = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(&line) else {
                    eprintln!("{label}: {line}");
                    continue;
                };
                if fields.get("message").and_then(|m| m.as_str()) == Some(ready) {
                    return Ok(fields
                        .into_iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                        .collect());
                }
                if is_warning(&line) {
                    eprintln!("{label}: {line}");
                }
            }
            Err(anyhow!("{label} exited before logging {ready:?}"))
        })
        .await
        .map_err(|_| anyhow!("{name} did not log {ready:?} within {READY_TIMEOUT:?}"))??;
        let ready_at = Instant::now();
        // Keep draining its logs so it never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if is_warning(&line) {
                    eprintln!("{label}: {line}");
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            ready_fields,
            started,
            ready_at,
        })
    }

    /// A socket address the ready line carried (e.g. `grpc`, `admin`).
    pub fn addr(&self, field: &str) -> anyhow::Result<SocketAddr> {
        self.ready_fields
            .get(field)
            .ok_or_else(|| anyhow!("{}: no {field} in the ready log line", self.name))?
            .parse()
            .with_context(|| format!("{}: parsing {field}", self.name))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its memory and CPU now.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        procfs::usage(self.pid).with_context(|| format!("reading {}'s usage", self.name))
    }

    /// Its CPU time, to the nanosecond.
    pub fn cpu_precise(&self) -> anyhow::Result<Duration> {
        procfs::cpu_time_precise(self.pid)
            .with_context(|| format!("reading {}'s CPU time", self.name))
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.pid)?)
            .ok_or_else(|| anyhow!("{}: pid 0", self.name))?;
        rustix::process::kill_process(pid, signal)
            .with_context(|| format!("signalling {} ({signal:?})", self.name))
    }

    /// SIGTERM, then waits (up to 30 s) for a clean exit; returns how long that took.
    pub async fn terminate(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.signal(Signal::TERM)?;
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .map_err(|_| anyhow!("{} did not exit within 30 s of SIGTERM", self.name))??;
        if !exit.success() {
            bail!("{} exited with {exit}", self.name);
        }
        Ok(started.elapsed())
    }

    /// SIGKILL (a crash: nothing is released) and reaps it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::KILL)?;
        self.child.wait().await?;
        Ok(())
    }
}

fn is_warning(line: &str) -> bool {
    line.contains("\"level\":\"ERROR\"") || line.contains("\"level\":\"WARN\"")
}

/// Prometheus text exposition as `name{labels}` → value (comments and unparsable
/// values skipped).
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_becomes_a_map() {
        let m = parse_metrics(
            "# HELP x a counter\n# TYPE x counter\nx_total{reason=\"a b\"} 3\ny 0.5\nbroken NaNx\n",
        );
        assert_eq!(m.get("x_total{reason=\"a b\"}"), Some(&3.0));
        assert_eq!(m.get("y"), Some(&0.5));
        assert_eq!(m.len(), 2);
    }
}
