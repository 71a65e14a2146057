//! The measured processes: `rubber-stamp-approver` replicas and `rubber-stamp-agent`s,
//! spawned from the release binaries so that their memory and CPU are theirs alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use rubber_stamp_testbed::channel::http_get;
use rubber_stamp_testbed::channel::procfs::{self, Usage};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a process may take to log that it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process whose JSON log line with `message == ready` was seen.
#[derive(Debug)]
pub(crate) struct Spawned {
    name: String,
    child: Child,
    pid: u32,
    ready_fields: HashMap<String, String>,
    /// When it was spawned.
    pub(crate) started: Instant,
    /// When it logged that it was ready.
    pub(crate) ready_at: Instant,
}

impl Spawned {
    /// Spawns `command` (stderr: JSON log lines) and waits for the line whose `message` is
    /// `ready`. Later warnings and errors are echoed with the process's name.
    pub(crate) async fn start(
        name: &str,
        command: &mut Command,
        ready: &str,
    ) -> anyhow::Result<Self> {
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
    pub(crate) fn addr(&self, field: &str) -> anyhow::Result<SocketAddr> {
        self.ready_fields
            .get(field)
            .ok_or_else(|| anyhow!("{}: no {field} in the ready log line", self.name))?
            .parse()
            .with_context(|| format!("{}: parsing {field}", self.name))
    }

    /// Its memory and CPU now.
    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        procfs::usage(self.pid).with_context(|| format!("reading {}'s usage", self.name))
    }

    /// Its CPU time, to the nanosecond.
    pub(crate) fn cpu_precise(&self) -> anyhow::Result<Duration> {
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
    pub(crate) async fn terminate(&mut self) -> anyhow::Result<Duration> {
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
    pub(crate) async fn kill(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::KILL)?;
        self.child.wait().await?;
        Ok(())
    }
}

fn is_warning(line: &str) -> bool {
    line.contains("\"level\":\"ERROR\"") || line.contains("\"level\":\"WARN\"")
}

/// Where the binaries are and how approvers are configured.
#[derive(Debug, Clone)]
pub(crate) struct ApproverSetup {
    /// Directory holding `rubber-stamp-approver` and `rubber-stamp-agent`.
    pub(crate) bin_dir: PathBuf,
    /// Serving certificate and key of the attestation port.
    pub(crate) tls_cert: PathBuf,
    /// Its key.
    pub(crate) tls_key: PathBuf,
    /// The cluster CA (client certificates of kubelets and agents).
    pub(crate) client_ca: PathBuf,
    /// Kubeconfig of the approver's ServiceAccount.
    pub(crate) kubeconfig: PathBuf,
    /// Namespace of the Lease and Events.
    pub(crate) namespace: String,
    /// Lease duration.
    pub(crate) lease_duration: Duration,
    /// Connection limit (above the fleet size).
    pub(crate) max_connections: usize,
    /// The controller's `--concurrency`.
    pub(crate) concurrency: u16,
    /// Log filter.
    pub(crate) log_filter: String,
}

/// One approver replica process.
#[derive(Debug)]
pub(crate) struct Approver {
    /// Its name (Lease identity).
    pub(crate) name: String,
    /// The process.
    pub(crate) process: Spawned,
    /// Attestation port.
    pub(crate) grpc: SocketAddr,
    /// Admin port (`/metrics`).
    pub(crate) admin: SocketAddr,
}

impl Approver {
    /// Starts replica `name`, its attestation port on `grpc` (port 0: any).
    pub(crate) async fn start(
        setup: &ApproverSetup,
        name: &str,
        grpc: SocketAddr,
    ) -> anyhow::Result<Self> {
        let lease = format!("{}s", setup.lease_duration.as_secs().max(3));
        let grace = format!(
            "{}s",
            (setup.lease_duration.as_secs() / 3)
                .clamp(1, setup.lease_duration.as_secs().saturating_sub(2).max(1))
        );
        let mut command = Command::new(setup.bin_dir.join("rubber-stamp-approver"));
        command
            .arg("run")
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--health-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(&setup.tls_cert)
            .arg("--tls-key")
            .arg(&setup.tls_key)
            .arg("--client-ca")
            .arg(&setup.client_ca)
            .arg("--kubeconfig")
            .arg(&setup.kubeconfig)
            .args(["--namespace", &setup.namespace])
            .args(["--replica-name", name])
            .args(["--lease-duration", &lease, "--lease-grace", &grace])
            .args(["--max-connections", &setup.max_connections.to_string()])
            .args(["--concurrency", &setup.concurrency.to_string()])
            .args(["--log-format", "json", "--log-filter", &setup.log_filter]);
        let process = Spawned::start(name, &mut command, "listening").await?;
        Ok(Self {
            name: name.to_owned(),
            grpc: process.addr("grpc")?,
            admin: process.addr("admin")?,
            process,
        })
    }

    /// Its Prometheus metrics, `name{labels}` → value.
    pub(crate) async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let (status, text) = http_get(self.admin, "/metrics").await?;
        if status != 200 {
            bail!("{}: /metrics answered {status}", self.name);
        }
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect())
    }

    /// One metric (0 when absent).
    pub(crate) async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        Ok(self.metrics().await?.get(name).copied().unwrap_or(0.0))
    }

    /// Waits until `metric` reaches `at_least`, polling every 50 ms.
    pub(crate) async fn wait_metric(
        &self,
        metric: &str,
        at_least: f64,
        within: Duration,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let value = self.metric(metric).await?;
            if value >= at_least {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {metric} is {value}, not {at_least}, after {within:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Live attestation streams of an approver.
pub(crate) const LIVE_STREAMS: &str = "rubber_stamp_attestation_live_streams";
/// 1 while the replica acts on CSRs.
pub(crate) const LEADER: &str = "rubber_stamp_controller_leader";

/// One `rubber-stamp-agent` process.
#[derive(Debug)]
pub(crate) struct Agent {
    /// The process.
    pub(crate) process: Spawned,
}

impl Agent {
    /// Starts an agent streaming to `approver` with the certificate file `identity`;
    /// `extra` flags override its defaults.
    pub(crate) async fn start(
        bin_dir: &Path,
        name: &str,
        approver: SocketAddr,
        approver_ca: &Path,
        identity: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(bin_dir.join("rubber-stamp-agent"));
        command
            .arg("--approver")
            .arg(approver.to_string())
            .args(["--server-name", rubber_stamp_testbed::channel::SERVER_NAME])
            .arg("--approver-ca")
            .arg(approver_ca)
            .arg("--cert")
            .arg(identity)
            .args(["--health-listen", "127.0.0.1:0"])
            .args([
                "--log-format",
                "json",
                "--log-filter",
                "warn,rubber_stamp_agent=info",
            ])
            .args(extra);
        Ok(Self {
            process: Spawned::start(name, &mut command, "attestation stream open").await?,
        })
    }
}
