//! `kubectl rubber-stamp`, the kubectl plugin (binary `kubectl-rubber_stamp`): asks the
//! live cluster, as the user, why a kubelet serving CSR is approved, denied or pending.
//!
//! `explain CSR` reads the CSR, the Nodes, Services and ServiceCIDRs (what the controller
//! watches), the leader's policy (the ConfigMap its Pod mounts) and the leader's
//! attestations (`GET /attestations` on its admin port), runs the controller's `decide`
//! and its SubjectAccessReview (check 14), and prints `check`'s report followed by the
//! CSR's conditions and the approver's Events about it. `status` lists the Nodes without a
//! fresh attestation and every pending kubelet-serving CSR with its reason.
//!
//! What differs from the controller: "received after the CSR" is judged against the CSR's
//! `creationTimestamp` with the policy's `clockSkew` (as `check` does; the controller uses
//! its own first sighting), and "now" is this machine's clock.
//!
//! - [`flags`]: the command line (kubectl's own flags included).
//! - [`session`]: the API server as the user, and the user's bearer token.
//! - [`endpoint`]: the approver's admin URL, found from the leader Lease and its Pod.
//! - [`fetch`]: `GET /attestations`, over HTTPS with the token or plain HTTP.
//! - [`report`]: what is printed.

pub mod endpoint;
pub mod fetch;
pub mod flags;
pub mod report;
pub mod session;

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use rubber_stamp_core::{
    AccessReview, AttestationLookup as _, AttestationSet, Decision, NodeSet, Observed, Policy,
    ServiceSet, Verdict, decide, is_fresh,
};

use crate::check;
use crate::documents::{self, InputError};
use crate::flags::EXIT_USAGE;
use crate::flags::check::OutputFormat;
use crate::k8s;
use endpoint::{Endpoint, Leader, PodSettings};
use fetch::{FetchError, SnapshotRequest, Trust};
use flags::{GlobalArgs, PluginCli, PluginCommand};
use report::{ApproverInfo, Explained, NodeCoverage, PendingCsr, StatusReport, UnattestedNode};
use session::Session;

/// Largest CA bundle file read (`--approver-ca`).
const MAX_CA_BUNDLE_BYTES: u64 = 1024 * 1024;

/// Why the plugin could not answer. Every one exits 64, as `check`'s unusable input.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No usable kubeconfig.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The API server refused the user (403).
    #[error("you may not {what}: {message}")]
    Forbidden {
        /// The verb and resource.
        what: String,
        /// The API server's words.
        message: String,
    },
    /// Any other API error (404 included).
    #[error("{what}: {message}")]
    Api {
        /// The verb and resource.
        what: String,
        /// The HTTP status, when the API server answered.
        status: Option<u16>,
        /// The API server's (or the client's) words.
        message: String,
    },
    /// The API server did not answer in time.
    #[error("{what}: no answer within {timeout:?} (--request-timeout)")]
    Timeout {
        /// The verb and resource.
        what: String,
        /// The timeout.
        timeout: Duration,
    },
    /// An object lacks what it should hold.
    #[error("{0}")]
    Missing(String),
    /// The approver's admin URL could not be found.
    #[error("cannot find the approver's admin port: {0}; pass --approver-url")]
    Discovery(String),
    /// `--approver-url` is not a usable URL.
    #[error("--approver-url: {0}")]
    Url(String),
    /// The approver's CA bundle could not be read.
    #[error("the approver's CA bundle: {0}; pass one with --approver-ca")]
    CaBundle(String),
    /// The snapshot could not be fetched.
    #[error("reading the attestations: {0}")]
    Fetch(#[from] FetchError),
    /// A file given on the command line is unusable.
    #[error(transparent)]
    Input(#[from] InputError),
}

impl PluginError {
    /// An API error while trying to `what`.
    pub fn api(what: String, error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 403 => Self::Forbidden {
                what,
                message: status.message,
            },
            kube::Error::Api(status) => Self::Api {
                what,
                status: Some(status.code),
                message: if status.message.is_empty() {
                    format!("{} {}", status.code, status.reason)
                } else {
                    status.message
                },
            },
            other => Self::Api {
                what,
                status: None,
                message: other.to_string(),
            },
        }
    }
}

/// Parses the command line and runs it on a runtime of its own; returns the exit code.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match PluginCli::parse_args(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    runtime.block_on(run(cli))
}

/// What a command found, to print.
enum Answer<'a> {
    Explained {
        csr: &'a str,
        verdict: Verdict,
        explained: Box<Explained>,
    },
    Status(Box<StatusReport>),
}

/// Runs one command: asks, then prints (stdout is locked only to print).
pub async fn run(cli: PluginCli) -> ExitCode {
    let global = &cli.global;
    let answer = match &cli.command {
        PluginCommand::Explain(args) => {
            explain(global, &args.csr)
                .await
                .map(|(verdict, explained)| Answer::Explained {
                    csr: &args.csr,
                    verdict,
                    explained: Box::new(explained),
                })
        }
        PluginCommand::Status => status(global).await.map(|s| Answer::Status(Box::new(s))),
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => return fail(&e.to_string()),
    };
    let mut out = io::stdout().lock();
    let written = match (&answer, global.output) {
        (
            Answer::Explained {
                csr,
                verdict,
                explained,
            },
            format,
        ) => match format {
            OutputFormat::Text => report::write_explain_text(&mut out, csr, verdict, explained),
            OutputFormat::Json => report::write_explain_json(&mut out, csr, verdict, explained),
        }
        .map(|()| check::exit_code(verdict.decision())),
        (Answer::Status(status), OutputFormat::Text) => {
            report::write_status_text(&mut out, status, Timestamp::now()).map(|()| 0)
        }
        (Answer::Status(status), OutputFormat::Json) => {
            report::write_status_json(&mut out, status).map(|()| 0)
        }
    };
    match written.and_then(|code| out.flush().map(|()| code)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&format!("cannot write the report: {e}")),
    }
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(io::stderr(), "kubectl rubber-stamp: error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// The approver this asks: where its admin port is, and what its leader's Pod says.
struct Located {
    endpoint: Endpoint,
    info: ApproverInfo,
    settings: Option<PodSettings>,
    notes: Vec<String>,
}

/// The leader (Lease holder) and its Pod, then the admin URL: `--approver-url`, else the
/// Pod's IP and admin port. Without `--approver-url` a failure is an error naming it; with
/// it, the Pod only tells the policy, and a failure is a note.
async fn locate(session: &Session, global: &GlobalArgs) -> Result<Located, PluginError> {
    let lease_namespace = global
        .lease_namespace
        .as_deref()
        .unwrap_or(&global.namespace);
    let lease_ref = format!("{lease_namespace}/{}", global.lease_name);
    let leader: Result<(Leader, Pod), String> = async {
        let lease = session
            .lease(lease_namespace, &global.lease_name)
            .await
            .map_err(|e| e.to_string())?;
        let leader = endpoint::leader(&lease, Timestamp::now())
            .map_err(|e| format!("Lease {lease_ref}: {e}"))?;
        let pod = session
            .pod(&global.namespace, &leader.holder)
            .await
            .map_err(|e| format!("the leader {}'s Pod: {e}", leader.holder))?;
        Ok((leader, pod))
    }
    .await;
    let mut notes = Vec::new();
    let (endpoint, found_by) = match (&global.approver_url, &leader) {
        (Some(url), _) => (
            Endpoint::parse(url).map_err(PluginError::Url)?,
            "--approver-url",
        ),
        (None, Ok((_, pod))) => (
            endpoint::pod_endpoint(pod, &global.approver_port_name, global.approver_scheme)
                .map_err(PluginError::Discovery)?,
            "discovered",
        ),
        (None, Err(e)) => return Err(PluginError::Discovery(e.clone())),
    };
    if let Err(e) = &leader {
        notes.push(format!(
            "the leader is unknown ({e}): its policy and deny mode could not be read"
        ));
    }
    if let Ok((l, _)) = &leader
        && l.expired
    {
        notes.push(format!(
            "{} stopped renewing Lease {lease_ref}{}: no replica acts on CSRs now",
            l.holder,
            l.renewed_at
                .map(|t| format!(" (last renewed {t})"))
                .unwrap_or_default()
        ));
    }
    let (holder, expired, settings) = match leader {
        Ok((l, pod)) => (
            Some(l.holder),
            l.expired,
            Some(endpoint::pod_settings(&pod)),
        ),
        Err(_) => (None, false, None),
    };
    Ok(Located {
        info: ApproverInfo {
            url: endpoint.attestations_url(),
            found_by,
            lease: lease_ref,
            leader: holder,
            lease_expired: expired,
            attestations: 0,
        },
        endpoint,
        settings,
        notes,
    })
}

/// How to verify the approver's certificate: `--approver-ca`, else the CA bundle the
/// approver publishes; nothing over plain HTTP.
async fn trust(
    session: &Session,
    global: &GlobalArgs,
    endpoint: &Endpoint,
) -> Result<Option<Trust>, PluginError> {
    if endpoint.scheme == flags::Scheme::Http {
        return Ok(None);
    }
    let (pem, origin) = match &global.approver_ca {
        Some(path) => (
            documents::read_text(path, "CA bundle", MAX_CA_BUNDLE_BYTES)?,
            path.display().to_string(),
        ),
        None => {
            let (ns, name) = (&global.namespace, &global.approver_ca_configmap);
            let pem = session
                .config_map_key(ns, name, crate::pki::state::BUNDLE)
                .await
                .map_err(|e| PluginError::CaBundle(e.to_string()))?;
            (pem, format!("ConfigMap {ns}/{name}"))
        }
    };
    let roots =
        fetch::roots_from_pem(&pem).map_err(|e| PluginError::CaBundle(format!("{origin} {e}")))?;
    Ok(Some(Trust {
        roots,
        server_name: endpoint
            .server_name(global.approver_server_name.as_deref(), &global.namespace),
        origin,
    }))
}

/// The leader's attestations.
async fn attestations(
    session: &Session,
    global: &GlobalArgs,
    located: &mut Located,
) -> Result<AttestationSet, PluginError> {
    let trust = trust(session, global, &located.endpoint).await?;
    let snapshot = fetch::attestations(SnapshotRequest {
        endpoint: &located.endpoint,
        trust: trust.as_ref(),
        token: session.token.as_deref().ok(),
        timeout: global.request_timeout,
        limit: fetch::MAX_SNAPSHOT_BYTES,
    })
    .await
    .map_err(|e| match (&e, &session.token) {
        (FetchError::Unauthorized { url, .. }, Err(why)) => {
            PluginError::Fetch(FetchError::Unauthorized {
                url: url.clone(),
                hint: format!("no bearer token was sent: {why}; pass one with --token, e.g. from `kubectl create token`"),
            })
        }
        _ => PluginError::Fetch(e),
    })?;
    located.info.attestations = snapshot.attestations.len();
    Ok(snapshot.into())
}

/// The policy the leader decides with: `--policy`, else the ConfigMap key its Pod mounts
/// as `--policy`, else the built-in one; `--deny`, else the leader's. Returns it and where
/// it came from; a policy that could not be read is a note.
async fn policy(
    session: &Session,
    global: &GlobalArgs,
    located: &mut Located,
) -> Result<(Policy, String), PluginError> {
    let (mut policy, mut source) = match (&global.policy, &located.settings) {
        (Some(path), _) => (
            documents::read_policy(path)?,
            format!("file {}", path.display()),
        ),
        (None, None) => (
            Policy::default(),
            "built-in default (the leader's Pod could not be read)".to_owned(),
        ),
        (None, Some(settings)) => match &settings.policy {
            Ok(None) => (
                Policy::default(),
                "built-in default (the leader runs without --policy)".to_owned(),
            ),
            Ok(Some(src)) => {
                let ns = &global.namespace;
                let read = session
                    .config_map_key(ns, &src.config_map, &src.key)
                    .await
                    .and_then(|text| {
                        if text.len() as u64 > documents::MAX_POLICY_DOCUMENT_BYTES {
                            return Err(PluginError::Missing("larger than 1 MiB".to_owned()));
                        }
                        Policy::from_yaml(&text).map_err(|e| PluginError::Missing(e.to_string()))
                    });
                let described = format!(
                    "ConfigMap {ns}/{}, key {} (the leader's --policy={})",
                    src.config_map, src.key, src.path
                );
                match read {
                    Ok(policy) => (policy, described),
                    Err(e) => {
                        located.notes.push(format!(
                            "the leader's policy, {described}, could not be read ({e}): deciding under the built-in default; pass --policy"
                        ));
                        (
                            Policy::default(),
                            "built-in default (see the notes)".to_owned(),
                        )
                    }
                }
            }
            Err(e) => {
                located.notes.push(format!(
                    "where the leader's policy comes from is unknown ({e}): deciding under the built-in default; pass --policy"
                ));
                (
                    Policy::default(),
                    "built-in default (see the notes)".to_owned(),
                )
            }
        },
    };
    let deny = global.deny.map(|d| (d, "--deny")).or_else(|| {
        located
            .settings
            .as_ref()
            .and_then(|s| s.deny)
            .map(|d| (d, "the leader's --deny"))
    });
    if let Some((mode, from)) = deny {
        policy.deny = mode;
        source.push_str(&format!("; deny: {mode} ({from})"));
    }
    Ok((policy, source))
}

/// What `decide` reads, from the live cluster and the leader.
struct Inputs {
    nodes: NodeSet,
    node_names: Vec<String>,
    services: ServiceSet,
    attestations: AttestationSet,
    policy: Policy,
    policy_source: String,
    located: Located,
}

async fn inputs(session: &Session, global: &GlobalArgs) -> Result<Inputs, PluginError> {
    let ((nodes, node_names), services) = tokio::try_join!(session.nodes(), session.services())?;
    let mut located = locate(session, global).await?;
    let attestations = attestations(session, global, &mut located).await?;
    let (policy, policy_source) = policy(session, global, &mut located).await?;
    Ok(Inputs {
        nodes,
        node_names,
        services,
        attestations,
        policy,
        policy_source,
        located,
    })
}

impl Inputs {
    /// The core's verdict with check 14's `review`.
    fn decide(
        &self,
        csr: &rubber_stamp_core::CsrInput,
        review: &AccessReview,
        now: Timestamp,
    ) -> Verdict {
        let observed = Observed {
            attestations: &self.attestations,
            nodes: Some(&self.nodes),
            services: Some(&self.services),
            access_review: Some(review),
            ownership: None,
        };
        decide(csr, observed, &self.policy, now)
    }
}

/// Check 14's answers, per requestor (as the controller keys them), and why reviews
/// cannot be made at all, once one failed.
#[derive(Default)]
struct Reviews {
    answers: HashMap<Requestor, AccessReview>,
    failed: bool,
}

/// Who a SubjectAccessReview asks about.
type Requestor = (
    String,
    String,
    Vec<String>,
    std::collections::BTreeMap<String, Vec<String>>,
);

/// Decides as the controller does: without check 14 first, then, when every other check
/// passes, with the SubjectAccessReview's answer. A review that cannot be made leaves
/// check 14 not evaluated, says why in a note once, and is not tried again.
async fn decide_live(
    session: &Session,
    inputs: &Inputs,
    csr: &rubber_stamp_core::CsrInput,
    now: Timestamp,
    reviews: &mut Reviews,
    notes: &mut Vec<String>,
) -> Verdict {
    let verdict = inputs.decide(csr, &AccessReview::NotMade, now);
    if !verdict.awaits_access_review() || reviews.failed {
        return verdict;
    }
    let key = (
        csr.username.clone(),
        csr.uid.clone(),
        csr.groups.clone(),
        csr.extra.clone(),
    );
    let answer = match reviews.answers.get(&key) {
        Some(answer) => answer.clone(),
        None => match session.selfnodeserver(csr).await {
            Ok(answer) => {
                reviews.answers.insert(key, answer.clone());
                answer
            }
            Err(e) => {
                reviews.failed = true;
                notes.push(format!(
                    "check 14 (the SubjectAccessReview) was not made: {e}"
                ));
                return verdict;
            }
        },
    };
    inputs.decide(csr, &answer, now)
}

/// `explain CSR`.
pub async fn explain(global: &GlobalArgs, name: &str) -> Result<(Verdict, Explained), PluginError> {
    let session = Session::connect(global).await?;
    // First: who cannot read CSRs cannot explain them.
    let csr = session.csr(name).await?;
    let mut inputs = inputs(&session, global).await?;
    let input = k8s::csr_input(&csr);
    let mut notes = std::mem::take(&mut inputs.located.notes);
    let verdict = decide_live(
        &session,
        &inputs,
        &input,
        Timestamp::now(),
        &mut Reviews::default(),
        &mut notes,
    )
    .await;
    let events = match session.events_about(&csr).await {
        Ok(events) => {
            let (events, dropped) = report::approver_events(&events, csr.metadata.uid.as_deref());
            if dropped > 0 {
                notes.push(format!("{dropped} older Events are not shown"));
            }
            Some(events)
        }
        Err(e) => {
            notes.push(format!("the approver's Events could not be read: {e}"));
            None
        }
    };
    if verdict.decision() == Decision::Ignore && !input.conditions.is_empty() {
        notes.push("the CSR is final: the approver no longer decides on it; its conditions and Events say what it did".to_owned());
    }
    Ok((
        verdict,
        Explained {
            approver: inputs.located.info.clone(),
            policy: inputs.policy_source.clone(),
            conditions: report::conditions(&csr),
            events,
            notes,
        },
    ))
}

/// `status`.
pub async fn status(global: &GlobalArgs) -> Result<StatusReport, PluginError> {
    let session = Session::connect(global).await?;
    let csrs = session.serving_csrs().await?;
    let mut inputs = inputs(&session, global).await?;
    let mut notes = std::mem::take(&mut inputs.located.notes);
    let now = Timestamp::now();

    let fresh = |name: &str| {
        inputs
            .attestations
            .attestation(name)
            .is_some_and(|a| is_fresh(a.received_at, now, &inputs.policy))
    };
    let mut names = inputs.node_names.clone();
    names.sort();
    let unattested: Vec<UnattestedNode> = names
        .iter()
        .filter(|n| !fresh(n))
        .map(|n| UnattestedNode {
            name: n.clone(),
            last_attestation: inputs.attestations.attestation(n).map(|a| a.received_at),
        })
        .collect();

    // The approver's Events about CSRs, by CSR name.
    let mut said: Option<HashMap<String, Vec<k8s_openapi::api::events::v1::Event>>> =
        match session.events_about_csrs().await {
            Ok(events) => {
                let mut by_name: HashMap<String, Vec<_>> = HashMap::new();
                for event in events {
                    if let Some(name) = event.regarding.as_ref().and_then(|r| r.name.clone()) {
                        by_name.entry(name).or_default().push(event);
                    }
                }
                Some(by_name)
            }
            Err(e) => {
                notes.push(format!("the approver's Events could not be read: {e}"));
                None
            }
        };
    let mut reviews = Reviews::default();
    let mut pending = Vec::new();
    let mut inputs_csrs: Vec<_> = csrs
        .iter()
        .map(|c| (c, k8s::csr_input(c)))
        .filter(|(_, input)| input.in_scope())
        .collect();
    inputs_csrs.sort_by_key(|(_, input)| (input.created_at, input.name.clone()));
    for (csr, input) in &inputs_csrs {
        let verdict = decide_live(&session, &inputs, input, now, &mut reviews, &mut notes).await;
        let approver_said = said
            .as_mut()
            .and_then(|by_name| by_name.remove(&input.name))
            .and_then(|about| {
                report::approver_events(&about, csr.metadata.uid.as_deref())
                    .0
                    .last()
                    .map(|e| e.reason.clone())
            });
        pending.push(PendingCsr {
            csr: input.name.clone(),
            node: verdict.node().map(str::to_owned),
            requestor: input.username.clone(),
            created_at: input.created_at,
            decision: verdict.decision(),
            reason: verdict.reason(),
            summary: verdict.summary(),
            approver_said,
        });
    }
    Ok(StatusReport {
        approver: inputs.located.info.clone(),
        policy: inputs.policy_source.clone(),
        nodes: NodeCoverage {
            total: names.len(),
            attested: names.len() - unattested.len(),
            unattested,
        },
        pending,
        notes,
    })
}
