//! A process started by the testbed (inside a simulated host or in the root
//! namespace): its own process group, output captured to files, killed with
//! its whole group when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::cleanup;
use super::error::HostsError;

/// How often waiting polls a process or its output.
const POLL: Duration = Duration::from_millis(20);
/// How long `Drop` waits for a killed process to be reaped.
const REAP_ON_DROP: Duration = Duration::from_secs(2);

static LOG_SEQ: AtomicU32 = AtomicU32::new(1);

/// A running process and its captured output. Dropping it sends SIGKILL to its
/// process group and reaps it.
#[derive(Debug)]
pub struct HostProcess {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl HostProcess {
    /// Starts `cmd` in a new process group, stdin from `/dev/null`, stdout and
    /// stderr to `<log_dir>/<label>.<n>.{stdout,stderr}`: in the root namespace (hosts
    /// start theirs with [`Host::spawn`](crate::Host::spawn)).
    pub fn spawn(label: &str, mut cmd: Command, log_dir: &Path) -> Result<Self, HostsError> {
        use std::os::unix::process::CommandExt;

        let stem = format!(
            "{}.{}",
            file_safe(label),
            LOG_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let stdout = log_dir.join(format!("{stem}.stdout"));
        let stderr = log_dir.join(format!("{stem}.stderr"));
        let create = |path: &Path| {
            std::fs::File::create(path).map_err(|source| HostsError::Io {
                path: path.to_owned(),
                source,
            })
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(create(&stdout)?))
            .stderr(Stdio::from(create(&stderr)?))
            .process_group(0);
        let command = super::tool::display_command(
            Path::new(cmd.get_program()),
            &cmd.get_args().collect::<Vec<_>>(),
        );
        let child = cmd
            .spawn()
            .map_err(|source| HostsError::Spawn { command, source })?;
        cleanup::register_group(child.id());
        Ok(Self {
            label: label.to_owned(),
            child,
            status: None,
            stdout,
            stderr,
        })
    }

    /// The process id (also its process group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The label it was started with.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The file its stdout goes to.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// The file its stderr goes to.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Everything it has written to stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> Result<String, HostsError> {
        read_lossy(&self.stdout)
    }

    /// Everything it has written to stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> Result<String, HostsError> {
        read_lossy(&self.stderr)
    }

    /// Its exit status if it has exited (reaping it), without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, HostsError> {
        if self.status.is_none() {
            let status = self.child.try_wait().map_err(|e| self.error(e))?;
            if let Some(status) = status {
                self.reaped(status);
            }
        }
        Ok(self.status)
    }

    /// Waits until it exits, polling, for at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, HostsError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(HostsError::Timeout {
                    what: format!("exit of {} (pid {})", self.label, self.id()),
                    timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until its stdout contains `needle`, for at most `timeout`; fails
    /// early (with its output in the error) when it exits first. Returns
    /// stdout as read at that moment.
    pub async fn wait_for_stdout(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, HostsError> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout()?;
            if out.contains(needle) {
                return Ok(out);
            }
            if let Some(status) = self.try_wait()? {
                return Err(HostsError::Timeout {
                    what: format!(
                        "{needle:?} on stdout of {} (exited {status}; stdout: {out:?}; stderr: {:?})",
                        self.label,
                        self.stderr().unwrap_or_default()
                    ),
                    timeout,
                });
            }
            if Instant::now() >= deadline {
                return Err(HostsError::Timeout {
                    what: format!(
                        "{needle:?} on stdout of {} (stdout so far: {out:?}; stderr: {:?})",
                        self.label,
                        self.stderr().unwrap_or_default()
                    ),
                    timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM to its process group.
    pub fn terminate(&mut self) -> Result<(), HostsError> {
        self.signal_group(Signal::TERM)
    }

    /// Sends SIGKILL to its process group.
    pub fn kill(&mut self) -> Result<(), HostsError> {
        self.signal_group(Signal::KILL)
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`; returns how
    /// it ended.
    pub async fn stop(&mut self, grace: Duration) -> Result<ExitStatus, HostsError> {
        self.terminate()?;
        match self.wait(grace).await {
            Ok(status) => Ok(status),
            Err(HostsError::Timeout { .. }) => {
                self.kill()?;
                self.wait(REAP_ON_DROP).await
            }
            Err(e) => Err(e),
        }
    }

    fn signal_group(&mut self, signal: Signal) -> Result<(), HostsError> {
        // Once the leader is reaped its pid may be reused: signal nothing then.
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let Some(pid) = Pid::from_raw(self.id() as i32) else {
            return Ok(());
        };
        match rustix::process::kill_process_group(pid, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(self.error(e.into())),
        }
    }

    fn reaped(&mut self, status: ExitStatus) {
        self.status = Some(status);
        cleanup::unregister_group(self.child.id());
    }

    fn error(&self, source: std::io::Error) -> HostsError {
        HostsError::Process {
            pid: self.id(),
            label: self.label.clone(),
            source,
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if self.signal_group(Signal::KILL).is_err() {
            return;
        }
        let deadline = Instant::now() + REAP_ON_DROP;
        while self.status.is_none() && Instant::now() < deadline {
            if self.try_wait().is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn read_lossy(path: &Path) -> Result<String, HostsError> {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|source| HostsError::Io {
            path: path.to_owned(),
            source,
        })
}

/// A label as a file name: anything but `[A-Za-z0-9._-]` becomes `_`.
fn file_safe(label: &str) -> String {
    let s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("p{s}")
    } else {
        s
    }
}
