//! The command lines of the product binaries as the testbed starts them: one place that
//! knows `rubber-stamp-approver run`'s and `rubber-stamp-agent`'s flags, for the sandbox,
//! the benchmarks and the end-to-end tests. (The end-to-end crate checks that the
//! binaries' own flag parsers accept what is written here.)

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A duration as both binaries' flags take it (`1500ms`, `3s`).
pub fn duration_flag(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Any port on loopback, for servers whose address the test reads from their logs.
fn loopback_any() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// `rubber-stamp-approver run …`: its attestation server with the given certificates, health
/// and admin on loopback, JSON logs; with a controller or attestation only.
#[derive(Clone, Debug)]
pub struct ApproverCommand {
    grpc_listen: SocketAddr,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    client_ca: PathBuf,
    replica_name: Option<String>,
    controller: Option<ControllerFlags>,
    max_connections: Option<usize>,
    drain_timeout: Option<Duration>,
    log_filter: String,
    admin_secure: bool,
    flags: Vec<OsString>,
}

/// The controller's flags.
#[derive(Clone, Debug)]
struct ControllerFlags {
    kubeconfig: PathBuf,
    namespace: String,
    lease_duration: Duration,
    policy: Option<PathBuf>,
    concurrency: Option<u16>,
}

impl ApproverCommand {
    /// Attestation only (`--attestation-only`): no cluster, on any loopback port, with
    /// this serving certificate and key and the client CA kubelet certificates chain to;
    /// logs at `info`; the admin port open in plain HTTP (`--admin-secure=false`: the tests
    /// that read it are not about its security) unless [`admin_secure`](Self::admin_secure).
    pub fn new(
        tls_cert: impl Into<PathBuf>,
        tls_key: impl Into<PathBuf>,
        client_ca: impl Into<PathBuf>,
    ) -> Self {
        Self {
            grpc_listen: loopback_any(),
            tls_cert: tls_cert.into(),
            tls_key: tls_key.into(),
            client_ca: client_ca.into(),
            replica_name: None,
            controller: None,
            max_connections: None,
            drain_timeout: None,
            log_filter: "info".to_owned(),
            admin_secure: false,
            flags: Vec::new(),
        }
    }

    /// The admin port as deployed: HTTPS, every request reviewed through the API server
    /// (needs [`controller`](Self::controller)'s kubeconfig).
    pub fn admin_secure(mut self, secure: bool) -> Self {
        self.admin_secure = secure;
        self
    }

    /// Any other flag with its value, e.g. `("agent-identity", "token,kubelet-cert")`.
    pub fn flag(mut self, flag: &str, value: impl Into<OsString>) -> Self {
        self.flags.push(format!("--{flag}").into());
        self.flags.push(value.into());
        self
    }

    /// The attestation server's address (port 0 picks one).
    pub fn grpc_listen(mut self, addr: SocketAddr) -> Self {
        self.grpc_listen = addr;
        self
    }

    /// `--replica-name` (the Lease holder identity).
    pub fn replica_name(mut self, name: &str) -> Self {
        self.replica_name = Some(name.to_owned());
        self
    }

    /// With its controller: the cluster as this kubeconfig's user, the Lease and Events in
    /// `namespace`, leader election with this Lease duration (whole seconds, at least 3 s:
    /// see [`valid_lease_duration`]); the leader stops acting a third of the Lease before
    /// it could expire.
    pub fn controller(
        mut self,
        kubeconfig: impl Into<PathBuf>,
        namespace: &str,
        lease_duration: Duration,
    ) -> Self {
        self.controller = Some(ControllerFlags {
            kubeconfig: kubeconfig.into(),
            namespace: namespace.to_owned(),
            lease_duration,
            policy: None,
            concurrency: None,
        });
        self
    }

    /// The controller's `--policy` file (no-op without [`controller`](Self::controller)).
    pub fn policy(mut self, path: impl Into<PathBuf>) -> Self {
        if let Some(c) = &mut self.controller {
            c.policy = Some(path.into());
        }
        self
    }

    /// The controller's `--concurrency` (no-op without [`controller`](Self::controller)).
    pub fn concurrency(mut self, n: u16) -> Self {
        if let Some(c) = &mut self.controller {
            c.concurrency = Some(n);
        }
        self
    }

    /// `--max-connections` of the attestation port.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// `--drain-timeout`.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = Some(d);
        self
    }

    /// `--log-filter` (logs are JSON lines on stderr).
    pub fn log_filter(mut self, filter: &str) -> Self {
        filter.clone_into(&mut self.log_filter);
        self
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["run".into()];
        if self.controller.is_none() {
            args.push("--attestation-only".into());
        }
        let loopback = loopback_any().to_string();
        args.extend([
            "--grpc-listen".into(),
            self.grpc_listen.to_string().into(),
            "--health-listen".into(),
            loopback.clone().into(),
            "--admin-listen".into(),
            loopback.into(),
            "--tls-cert".into(),
            self.tls_cert.clone().into(),
            "--tls-key".into(),
            self.tls_key.clone().into(),
            "--client-ca".into(),
            self.client_ca.clone().into(),
        ]);
        if let Some(name) = &self.replica_name {
            args.extend(["--replica-name".into(), name.into()]);
        }
        if let Some(c) = &self.controller {
            let duration = c.lease_duration.as_secs().max(3);
            let grace = (duration / 3).clamp(1, duration.saturating_sub(2).max(1));
            args.extend([
                "--kubeconfig".into(),
                c.kubeconfig.clone().into(),
                "--namespace".into(),
                c.namespace.clone().into(),
                "--lease-duration".into(),
                format!("{duration}s").into(),
                "--lease-grace".into(),
                format!("{grace}s").into(),
            ]);
            if let Some(policy) = &c.policy {
                args.extend(["--policy".into(), policy.clone().into()]);
            }
            if let Some(n) = c.concurrency {
                args.extend(["--concurrency".into(), n.to_string().into()]);
            }
        }
        if let Some(n) = self.max_connections {
            args.extend(["--max-connections".into(), n.to_string().into()]);
        }
        if let Some(d) = self.drain_timeout {
            args.extend(["--drain-timeout".into(), duration_flag(d).into()]);
        }
        args.push(format!("--admin-secure={}", self.admin_secure).into());
        args.extend(self.flags.iter().cloned());
        args.extend([
            "--log-format".into(),
            "json".into(),
            "--log-filter".into(),
            self.log_filter.clone().into(),
        ]);
        args
    }
}

/// Whether the approver accepts `d` as a Lease duration with the grace
/// [`ApproverCommand::controller`] gives it: whole seconds, at least 3 s.
pub fn valid_lease_duration(d: Duration) -> bool {
    d.subsec_nanos() == 0 && d >= Duration::from_secs(3)
}

/// `rubber-stamp-agent …`: one approver address, its CA bundle, the kubelet's certificate
/// file; health and the proof listener on any loopback port (the proof listener's default,
/// `[::]:10273`, would be taken by the first of several agents on one machine); everything
/// else the agent's defaults unless set.
#[derive(Clone, Debug)]
pub struct AgentCommand {
    approver: String,
    approver_ca: PathBuf,
    cert: PathBuf,
    token: Option<PathBuf>,
    health_listen: String,
    proof_listen: String,
    server_name: Option<String>,
    json_logs: bool,
    log_filter: Option<String>,
    flags: Vec<OsString>,
}

impl AgentCommand {
    /// An agent streaming to `approver` (`host:port`, resolved like a Service name),
    /// trusting `approver_ca`, presenting the certificate and key in `cert`.
    pub fn new(
        approver: impl ToString,
        approver_ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
    ) -> Self {
        Self {
            approver: approver.to_string(),
            approver_ca: approver_ca.into(),
            cert: cert.into(),
            token: None,
            health_listen: loopback_any().to_string(),
            proof_listen: loopback_any().to_string(),
            server_name: None,
            json_logs: false,
            log_filter: None,
            flags: Vec::new(),
        }
    }

    /// Attest with the ServiceAccount token in `path` (`--identity token --token-file`)
    /// instead of the certificate.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token = Some(path.into());
        self
    }

    /// `--server-name` (default: the approver's host).
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_owned());
        self
    }

    /// `--health-listen`.
    pub fn health_listen(mut self, addr: impl ToString) -> Self {
        self.health_listen = addr.to_string();
        self
    }

    /// `--proof-listen`: an address, or `off`.
    pub fn proof_listen(mut self, addr: impl ToString) -> Self {
        self.proof_listen = addr.to_string();
        self
    }

    /// JSON log lines on stderr (`--log-format json`), the form the testbed reads.
    pub fn json_logs(mut self) -> Self {
        self.json_logs = true;
        self
    }

    /// `--log-filter`.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = Some(filter.to_owned());
        self
    }

    /// A duration flag, e.g. `("heartbeat-interval", 1 s)` → `--heartbeat-interval 1s`.
    pub fn duration(mut self, flag: &str, d: Duration) -> Self {
        self.flags.push(format!("--{flag}").into());
        self.flags.push(duration_flag(d).into());
        self
    }

    /// Any other flag with its value, e.g. `("machine-id-path", path)`.
    pub fn flag(mut self, flag: &str, value: impl Into<OsString>) -> Self {
        self.flags.push(format!("--{flag}").into());
        self.flags.push(value.into());
        self
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--approver".into(),
            self.approver.clone().into(),
            "--approver-ca".into(),
            self.approver_ca.clone().into(),
        ];
        match &self.token {
            Some(token) => args.extend([
                "--identity".into(),
                "token".into(),
                "--token-file".into(),
                token.clone().into(),
            ]),
            None => args.extend(["--cert".into(), self.cert.clone().into()]),
        }
        args.extend(["--health-listen".into(), self.health_listen.clone().into()]);
        args.extend(["--proof-listen".into(), self.proof_listen.clone().into()]);
        if let Some(name) = &self.server_name {
            args.extend(["--server-name".into(), name.into()]);
        }
        args.extend(self.flags.iter().cloned());
        if self.json_logs {
            args.extend(["--log-format".into(), "json".into()]);
        }
        if let Some(filter) = &self.log_filter {
            args.extend(["--log-filter".into(), filter.into()]);
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn durations_are_written_in_whole_units() {
        assert_eq!(duration_flag(Duration::from_secs(60)), "60s");
        assert_eq!(duration_flag(Duration::from_millis(1500)), "1500ms");
        for d in [Duration::from_secs(3), Duration::from_millis(250)] {
            assert_eq!(
                rubber_stamp_agent::config::parse_duration(&duration_flag(d)),
                Ok(d)
            );
        }
    }

    #[test]
    fn the_lease_grace_is_a_third_of_the_lease() {
        let args = strings(
            &ApproverCommand::new("c", "k", "ca")
                .controller("kubeconfig", "rubber-stamp", Duration::from_secs(10))
                .args(),
        );
        let after = |flag: &str| {
            let i = args.iter().position(|a| a == flag).expect(flag);
            args[i + 1].clone()
        };
        assert_eq!(after("--lease-duration"), "10s");
        assert_eq!(after("--lease-grace"), "3s");
        assert!(!args.contains(&"--attestation-only".to_owned()));
        let alone = strings(&ApproverCommand::new("c", "k", "ca").args());
        assert!(alone.contains(&"--attestation-only".to_owned()));
    }

    #[test]
    fn agent_flags_come_in_pairs_after_the_required_ones() {
        let args = strings(
            &AgentCommand::new("127.0.0.1:8443", "ca.crt", "node.pem")
                .server_name("localhost")
                .duration("heartbeat-interval", Duration::from_millis(500))
                .json_logs()
                .log_filter("info")
                .args(),
        );
        assert_eq!(
            args,
            [
                "--approver",
                "127.0.0.1:8443",
                "--approver-ca",
                "ca.crt",
                "--cert",
                "node.pem",
                "--health-listen",
                "127.0.0.1:0",
                "--proof-listen",
                "127.0.0.1:0",
                "--server-name",
                "localhost",
                "--heartbeat-interval",
                "500ms",
                "--log-format",
                "json",
                "--log-filter",
                "info"
            ]
        );
    }
}
