//! Flags of `kubectl rubber-stamp`. kubectl hands a plugin every argument after the
//! plugin's name unchanged (and refuses flags before it), so kubectl's own `--kubeconfig`,
//! `--context`, `--cluster`, `--user`, `-n`, `--token` and `--request-timeout` are declared
//! here, global, and accepted anywhere after `rubber-stamp`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rubber_stamp_core::DenyMode;

use crate::controller::config::DEFAULT_LEASE_NAME;
use crate::flags::check::OutputFormat;

use super::endpoint::{ADMIN_PORT_NAME, DEFAULT_NAMESPACE};

/// The CA bundle ConfigMap the approver publishes (`--ca-configmap`'s default).
pub const DEFAULT_CA_CONFIGMAP: &str = "rubber-stamp-ca";

/// `kubectl rubber-stamp`: asks a live cluster why a kubelet serving CSR is approved,
/// denied or pending.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-rubber_stamp",
    bin_name = "kubectl rubber-stamp",
    version,
    about,
    long_about = None
)]
pub struct PluginCli {
    /// What to do.
    #[command(subcommand)]
    pub command: PluginCommand,
    /// Where the cluster and the approver are, and how to print.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Decide on one CSR as the approver does, with the live cluster's objects and the
    /// leader's attestations, and show what the approver last did with it (conditions,
    /// Events).
    ///
    /// Exit code: 0 approve, 1 deny, 2 pending, 3 ignore (out of scope, e.g. already
    /// approved or denied), 64 when the cluster or the approver cannot be asked.
    Explain(ExplainArgs),
    /// Nodes without a fresh attestation, and every pending kubelet-serving CSR with the
    /// reason it waits.
    ///
    /// Exit code: 0, or 64 when the cluster or the approver cannot be asked.
    Status,
}

/// Arguments of `explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The CertificateSigningRequest's name.
    #[arg(value_name = "CSR-NAME")]
    pub csr: String,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Kubeconfig file (kubectl's flag). Default: `KUBECONFIG`, then `~/.kube/config`,
    /// then the in-cluster ServiceAccount.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (kubectl's flag).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// The kubeconfig cluster to use (kubectl's flag).
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,

    /// The kubeconfig user to use (kubectl's flag).
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,

    /// The approver's namespace: its Lease, Pods and CA bundle ConfigMap.
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE",
          default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Namespace of the leader Lease. Default: --namespace.
    #[arg(long, global = true, value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(long, global = true, value_name = "NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,

    /// Where the approver's admin port answers `GET /attestations`, e.g.
    /// `https://10.0.3.7:9090` (or `http://…` for a plaintext admin port). Default: found
    /// from the leader Lease's holder, its Pod's IP and its container port
    /// --approver-port-name.
    #[arg(long, global = true, value_name = "URL")]
    pub approver_url: Option<String>,

    /// Scheme of the URL found from the leader's Pod (without --approver-url).
    #[arg(long, global = true, value_enum, default_value_t = Scheme::Https)]
    pub approver_scheme: Scheme,

    /// Name of the admin port among the approver container's ports (without
    /// --approver-url).
    #[arg(long, global = true, value_name = "NAME", default_value = ADMIN_PORT_NAME)]
    pub approver_port_name: String,

    /// PEM CA bundle the approver's admin port certificate is verified against. Default:
    /// the bundle the approver publishes, key `ca.crt` of ConfigMap --approver-ca-configmap
    /// in --namespace, read as you.
    #[arg(long, global = true, value_name = "FILE")]
    pub approver_ca: Option<PathBuf>,

    /// The ConfigMap of the approver's CA bundle (without --approver-ca).
    #[arg(long, global = true, value_name = "NAME", default_value = DEFAULT_CA_CONFIGMAP)]
    pub approver_ca_configmap: String,

    /// The name the approver's certificate must carry. Default: the URL's host name, or
    /// for an IP address `rubber-stamp-approver.<namespace>.svc`.
    #[arg(long, global = true, value_name = "NAME")]
    pub approver_server_name: Option<String>,

    /// Bearer token sent to the approver's admin port over HTTPS (never over plain HTTP),
    /// e.g. `kubectl create token` of a ServiceAccount bound to
    /// rubber-stamp:attestation-reader. It does not change how the API server is reached.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Without --token, send the kubeconfig user's own bearer token (a token, a token file,
    /// or an exec or auth provider plugin's) to the approver. Off by default: the approver
    /// is found through objects of its namespace (the Lease, its Pod, the CA ConfigMap),
    /// so whoever may edit them chooses where a credential that works against the API
    /// server would go.
    #[arg(long, global = true)]
    pub send_kubeconfig_token: bool,

    /// Longest wait for any one request to the API server or the approver (kubectl's
    /// flag; e.g. `10s`, `1m`).
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s",
          value_parser = parse_timeout)]
    pub request_timeout: Duration,

    /// Decide under this policy file instead of the approver's (the ConfigMap its leader
    /// Pod mounts, read as you).
    #[arg(long, global = true, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Override the deny mode (default: the approver's `--deny`, else the policy's).
    #[arg(long, global = true, value_name = "always|never")]
    pub deny: Option<DenyMode>,

    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum,
          default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// How the approver's admin port is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scheme {
    /// TLS, verified against the approver's CA bundle, with a bearer token.
    Https,
    /// Plain HTTP, no token (an admin port without TLS).
    Http,
}

impl Scheme {
    /// `https` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Http => "http",
        }
    }
}

// === impl PluginCli ===

impl PluginCli {
    /// Parses arguments as `rubber-stamp-approver` does ([`crate::flags::parse_or_exit`]):
    /// exit code 0 for `--help` and `--version`, 64 for a usage error.
    pub fn parse_args<I, T>(args: I) -> Result<Self, ExitCode>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        crate::flags::parse_or_exit(args)
    }
}

/// A positive duration (`10s`, `1m`).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = crate::flags::parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<PluginCli, clap::Error> {
        PluginCli::try_parse_from(
            std::iter::once("kubectl-rubber_stamp").chain(args.iter().copied()),
        )
    }

    #[test]
    fn kubectls_flags_are_accepted_after_the_subcommand_as_kubectl_passes_them() {
        let cli = parse(&[
            "explain",
            "csr-1",
            "-n",
            "ops",
            "--kubeconfig",
            "/k",
            "--context",
            "c",
            "--token=t",
            "-o",
            "json",
            "--request-timeout=3s",
        ])
        .expect("parses");
        let PluginCommand::Explain(args) = &cli.command else {
            panic!("explain: {cli:?}");
        };
        assert_eq!(args.csr, "csr-1");
        let g = &cli.global;
        assert_eq!(g.namespace, "ops");
        assert_eq!(g.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
        assert_eq!(g.context.as_deref(), Some("c"));
        assert_eq!(g.token.as_deref(), Some("t"));
        assert_eq!(g.output, OutputFormat::Json);
        assert_eq!(g.request_timeout, Duration::from_secs(3));
    }

    #[test]
    fn defaults_name_the_shipped_objects() {
        let cli = parse(&["status"]).expect("parses");
        let g = &cli.global;
        assert_eq!(g.namespace, "rubber-stamp");
        assert_eq!(g.lease_name, "rubber-stamp-approver");
        assert_eq!(g.lease_namespace, None);
        assert_eq!(g.approver_scheme, Scheme::Https);
        assert_eq!(g.approver_port_name, "metrics");
        assert_eq!(g.approver_ca_configmap, "rubber-stamp-ca");
        assert_eq!(g.request_timeout, Duration::from_secs(10));
        assert_eq!(g.output, OutputFormat::Text);
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["explain"]).is_err(), "a CSR name is required");
        assert!(parse(&["status", "--request-timeout=0s"]).is_err());
        assert!(parse(&["status", "--approver-scheme=ftp"]).is_err());
        assert!(parse(&[]).is_err());
    }
}
