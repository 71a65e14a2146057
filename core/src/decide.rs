//! `decide`: checks 1–13 of DESIGN.md, in order, over plain data.
//!
//! Every check runs and is reported even after another failed, so one verdict
//! explains everything; only an out-of-scope CSR (1) and an unusable request
//! (2) stop early, and then the remaining checks are reported as skipped.

use std::fmt::{self, Display, Write as _};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use crate::attestation::{Attestation, AttestationLookup, canonical_ip};
use crate::input::{CsrInput, KUBELET_SERVING_SIGNER};
use crate::names::{hostname_matches_node, quoted, reserved_name, same_name};
use crate::node::{AddressKey, NodeLookup, NodeRecord};
use crate::node_name::{NODE_CN_PREFIX, NODES_GROUP};
use crate::policy::{HumanDuration, Policy};
use crate::request::{MAX_PROBLEMS_KEPT, ParsedRequest, RequestError, parse_request};
use crate::services::{ServiceJudgement, ServiceLookup, ServiceRule};
use crate::verdict::{CheckName, CheckReport, Outcome, Reason, SupportingAttestation, Verdict};

/// `spec.usages` a kubelet serving request must have.
pub const USAGE_DIGITAL_SIGNATURE: &str = "digital signature";
/// `spec.usages` a kubelet serving request may have (RSA keys).
pub const USAGE_KEY_ENCIPHERMENT: &str = "key encipherment";
/// `spec.usages` a kubelet serving request must have.
pub const USAGE_SERVER_AUTH: &str = "server auth";

/// The creation timestamp has one-second resolution: an attestation counts as
/// "received after the CSR" by that timestamp only when it is at least this much
/// later (plus the policy's clock skew, since the two come from different clocks).
const CREATION_RESOLUTION: SignedDuration = SignedDuration::from_secs(1);

/// What the decision reads besides the CSR and the policy: every lookup, `None` where it
/// is not known. Offline `check` without `--nodes` has no Node lookup (the Node half of
/// check 11 and check 12 are skipped); without `--services`/`--service-cidrs` no Service
/// lookup (check 9's Service rule is reported as not evaluated, never as passed).
#[derive(Clone, Copy)]
pub struct Observed<'a> {
    /// The attestations the agents reported.
    pub attestations: &'a dyn AttestationLookup,
    /// The cluster's Node objects.
    pub nodes: Option<&'a dyn NodeLookup>,
    /// The cluster's Services and ServiceCIDRs.
    pub services: Option<&'a dyn ServiceLookup>,
    /// Check 14's SubjectAccessReview, where one can be made (the controller); `None`
    /// offline, where check 14 is not reported at all.
    pub access_review: Option<&'a AccessReview>,
}

/// Check 14's input: whether the CSR's requestor may `create`
/// `certificates.k8s.io/certificatesigningrequests`, subresource `selfnodeserver`, as a
/// SubjectAccessReview answered. The controller makes the review only once every other
/// check passes ([`Verdict::awaits_access_review`]) and decides again with the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessReview {
    /// Not made (yet): check 14 is reported as not evaluated.
    NotMade,
    /// The requestor may; the reviewer's words.
    Allowed(String),
    /// The requestor may not; the reviewer's words.
    Refused(String),
}

impl fmt::Debug for Observed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed")
            .field("nodes", &self.nodes.is_some())
            .field("services", &self.services.is_some())
            .field("access_review", &self.access_review)
            .finish_non_exhaustive()
    }
}

impl<'a> Observed<'a> {
    /// Only attestations: no Nodes, no Services.
    pub fn attestations(attestations: &'a dyn AttestationLookup) -> Self {
        Self {
            attestations,
            nodes: None,
            services: None,
            access_review: None,
        }
    }
}

/// Decides on a CSR, parsing its request first (out-of-scope CSRs are not parsed).
pub fn decide(csr: &CsrInput, observed: Observed<'_>, policy: &Policy, now: Timestamp) -> Verdict {
    if !csr.in_scope() {
        return out_of_scope(csr, observed, policy);
    }
    let parsed = parse_request(&csr.request, policy);
    decide_parsed(csr, parsed.as_ref(), observed, policy, now)
}

/// Decides on a CSR whose request was already parsed with [`parse_request`]
/// under the same policy. `csr.request` is not read.
pub fn decide_parsed(
    csr: &CsrInput,
    request: Result<&ParsedRequest, &RequestError>,
    observed: Observed<'_>,
    policy: &Policy,
    now: Timestamp,
) -> Verdict {
    if !csr.in_scope() {
        return out_of_scope(csr, observed, policy);
    }
    let mut checks = Vec::with_capacity(CheckName::DECIDED.len() + 1);
    checks.push(CheckReport::passed(
        CheckName::Scope,
        format!(
            "signer is {KUBELET_SERVING_SIGNER} and the CSR is not yet approved, denied or failed"
        ),
    ));
    let req = match request {
        Ok(req) => req,
        Err(e) => {
            checks.push(CheckReport::failed(
                CheckName::Parse,
                Outcome::Deny,
                Reason::MalformedRequest,
                e.to_string(),
            ));
            skip_rest(
                &mut checks,
                observed,
                "not evaluated: the request could not be used",
            );
            return Verdict::new(None, checks, None, policy.deny);
        }
    };
    checks.push(CheckReport::passed(
        CheckName::Parse,
        format!(
            "one PEM CERTIFICATE REQUEST ({} bytes DER), {} key, {} self-signature verified",
            req.der_len(),
            req.key(),
            req.signature_algorithm()
        ),
    ));

    let Observed {
        attestations,
        nodes,
        services,
        access_review: _,
    } = observed;
    let node = req.node_name();
    let attestation = node.and_then(|n| attestations.attestation(n));
    let node_record = node.and_then(|n| nodes.and_then(|ns| ns.node(n)));
    let facts = Facts::new(csr, attestation, node_record.as_deref(), policy, now);
    let ctx = Ctx {
        csr,
        req,
        node,
        facts: &facts,
        attestations,
        nodes,
        services,
        policy,
        now,
    };

    checks.push(ctx.subject());
    checks.push(ctx.requestor());
    checks.push(ctx.usages());
    checks.push(ctx.san_shape());
    checks.push(ctx.attestation_fresh());
    checks.push(ctx.dns_sans());
    checks.push(ctx.ip_sans());
    checks.push(ctx.peer_binding());
    checks.push(ctx.unique_among_attestations());
    checks.push(ctx.unique_among_nodes());
    checks.push(ctx.node_object());
    checks.push(ctx.expiration());
    if let Some(review) = observed.access_review {
        checks.push(authorization(review));
    }

    let supporting = match &facts.attestation {
        Some(a) if facts.fresh => Some(SupportingAttestation {
            node: a.node_name.clone(),
            received_at: a.received_at,
            peer_address: a.peer_address,
        }),
        _ => None,
    };
    Verdict::new(node.map(str::to_owned), checks, supporting, policy.deny)
}

fn out_of_scope(csr: &CsrInput, observed: Observed<'_>, policy: &Policy) -> Verdict {
    let detail = if csr.signer_name != KUBELET_SERVING_SIGNER {
        format!(
            "signer is {}, not {KUBELET_SERVING_SIGNER}",
            quoted(&csr.signer_name)
        )
    } else {
        match csr.final_condition() {
            Some(c) => format!("the CSR already has a {c} condition"),
            None => "the CSR is out of scope".to_owned(),
        }
    };
    let mut checks = vec![CheckReport::failed(
        CheckName::Scope,
        Outcome::Ignore,
        Reason::OutOfScope,
        detail,
    )];
    skip_rest(
        &mut checks,
        observed,
        "not evaluated: the CSR is not ours to decide",
    );
    Verdict::new(None, checks, None, policy.deny)
}

fn skip_rest(checks: &mut Vec<CheckReport>, observed: Observed<'_>, why: &str) {
    for name in CheckName::DECIDED.iter().skip(checks.len()) {
        checks.push(CheckReport::skipped(*name, why));
    }
    if observed.access_review.is_some() {
        checks.push(CheckReport::skipped(CheckName::Authorization, why));
    }
}

/// 14: the SubjectAccessReview's answer.
fn authorization(review: &AccessReview) -> CheckReport {
    match review {
        AccessReview::NotMade => CheckReport::skipped(
            CheckName::Authorization,
            "not evaluated: the SubjectAccessReview is made only once every other check passes",
        ),
        AccessReview::Allowed(detail) => {
            CheckReport::passed(CheckName::Authorization, detail.clone())
        }
        AccessReview::Refused(detail) => CheckReport::failed(
            CheckName::Authorization,
            Outcome::Pending,
            Reason::SubjectAccessDenied,
            detail.clone(),
        ),
    }
}

/// True when an attestation received at `received_at` still counts at `now`.
pub fn is_fresh(received_at: Timestamp, now: Timestamp, policy: &Policy) -> bool {
    now.duration_since(received_at) <= policy.attestation_max_age.get()
}

/// What the node's own attestation allows the SAN checks to conclude.
///
/// A denial cannot be undone, so a SAN missing from the facts is a definite
/// violation only when the facts are evidence that the node lacks it: fresh,
/// received after the CSR (judged on one clock), complete by the agent's own
/// account, consistent (they contain the address the report's connection came
/// from: the host's own view of itself), and not doubted by the Node object
/// (machine-id and boot-id). Anything less leaves the CSR pending and says why.
struct Facts {
    attestation: Option<Arc<Attestation>>,
    fresh: bool,
    /// Why these facts cannot show that the node lacks a SAN; empty when they can.
    doubts: Vec<String>,
}

impl Facts {
    fn new(
        csr: &CsrInput,
        attestation: Option<Arc<Attestation>>,
        node: Option<&NodeRecord>,
        policy: &Policy,
        now: Timestamp,
    ) -> Self {
        let Some(a) = attestation else {
            return Self {
                attestation: None,
                fresh: false,
                doubts: vec!["there is no attestation".to_owned()],
            };
        };
        let fresh = is_fresh(a.received_at, now, policy);
        let mut doubts = Vec::new();
        if !fresh {
            doubts.push("the attestation is stale".to_owned());
        }
        if a.received_at > now {
            doubts.push(format!(
                "the attestation's receive time {} lies ahead of the approver's clock ({now})",
                a.received_at
            ));
        }
        if let Some(doubt) = Self::predates(csr, &a, policy) {
            doubts.push(doubt);
        }
        if let Err(incomplete) = a.completeness() {
            doubts.push(incomplete);
        }
        match a.peer_address.map(canonical_ip) {
            None => doubts.push(
                "the approver recorded no source address for the report, so it cannot be tied to the host that sent it"
                    .to_owned(),
            ),
            Some(peer) if !a.addresses().any(|(_, ip)| ip == peer) => doubts.push(format!(
                "the report does not contain {peer}, the address its connection came from, so it may not describe the host that sent it"
            )),
            Some(_) => {}
        }
        if let Some(node) = node {
            let mismatched: Vec<&str> = id_comparisons(&a, node)
                .filter(|c| !c.matches)
                .map(|c| c.what)
                .collect();
            if !mismatched.is_empty() {
                doubts.push(format!(
                    "the agent's {} differs from Node {}'s, so the facts may come from another machine",
                    mismatched.join(" and "),
                    node.name
                ));
            }
        }
        Self {
            attestation: Some(a),
            fresh,
            doubts,
        }
    }

    /// Why the attestation may predate the CSR, if it may. On the deciding approver's
    /// own clock when it knows when it first saw the CSR; otherwise against the CSR's
    /// `creationTimestamp` (the API server's clock) with the policy's skew bound.
    fn predates(csr: &CsrInput, a: &Attestation, policy: &Policy) -> Option<String> {
        match (csr.seen_at, csr.created_at) {
            (Some(seen), _) if a.received_at <= seen => Some(format!(
                "the attestation (received {}) is not newer than this approver's first sighting of the CSR ({seen})",
                a.received_at
            )),
            (Some(_), _) => None,
            (None, None) => {
                Some("the CSR's creation time is unknown, so the facts may predate it".to_owned())
            }
            (None, Some(created)) => {
                let margin = CREATION_RESOLUTION + policy.clock_skew.get();
                (a.received_at.duration_since(created) < margin).then(|| {
                    format!(
                        "the attestation (received {}) is not clearly newer than the CSR (created {created}; allowing {} for the creation time's resolution and clock skew)",
                        a.received_at,
                        HumanDuration::new(margin)
                    )
                })
            }
        }
    }

    /// True when a SAN missing from these facts is a definite violation.
    fn conclusive(&self) -> bool {
        self.doubts.is_empty()
    }

    /// The outcome and reason for a SAN missing from these facts.
    fn missing(&self, deny_reason: Reason) -> (Outcome, Reason) {
        if self.conclusive() {
            (Outcome::Deny, deny_reason)
        } else {
            (Outcome::Pending, Reason::UnattestedAddress)
        }
    }

    fn explain(&self, detail: String) -> String {
        if self.conclusive() {
            detail
        } else {
            format!(
                "{detail}; waiting for a fresh, complete report from the node's agent instead of denying, because {}",
                self.doubts.join("; ")
            )
        }
    }
}

/// One identifier known to both the agent and the Node object.
struct IdComparison {
    what: &'static str,
    field: &'static str,
    ours: String,
    theirs: String,
    matches: bool,
}

/// The machine-id and boot-id that both the attestation and the Node state.
fn id_comparisons<'a>(
    a: &'a Attestation,
    node: &'a NodeRecord,
) -> impl Iterator<Item = IdComparison> + 'a {
    [
        (
            "machine-id",
            "machineID",
            a.machine_id.as_deref(),
            node.machine_id.as_deref(),
        ),
        (
            "boot-id",
            "bootID",
            a.boot_id.as_deref(),
            node.boot_id.as_deref(),
        ),
    ]
    .into_iter()
    .filter_map(|(what, field, ours, theirs)| {
        let ours = ours.map(str::trim).filter(|s| !s.is_empty())?;
        let theirs = theirs.map(str::trim).filter(|s| !s.is_empty())?;
        Some(IdComparison {
            what,
            field,
            matches: ours.eq_ignore_ascii_case(theirs),
            ours: ours.to_owned(),
            theirs: theirs.to_owned(),
        })
    })
}

struct Ctx<'a> {
    csr: &'a CsrInput,
    req: &'a ParsedRequest,
    node: Option<&'a str>,
    facts: &'a Facts,
    attestations: &'a dyn AttestationLookup,
    nodes: Option<&'a dyn NodeLookup>,
    services: Option<&'a dyn ServiceLookup>,
    policy: &'a Policy,
    now: Timestamp,
}

/// A list for a detail: the first few items, then "and N more".
struct Listed<'a, T>(&'a [T], usize);

impl<T: Display> Display for Listed<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().take(MAX_PROBLEMS_KEPT).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        let shown = self.0.len().min(MAX_PROBLEMS_KEPT);
        if self.1 > shown {
            write!(f, " and {} more", self.1 - shown)?;
        }
        Ok(())
    }
}

/// Problems found by one check, kept bounded.
#[derive(Default)]
struct Problems {
    items: Vec<String>,
    count: usize,
}

impl Problems {
    fn push(&mut self, problem: impl FnOnce() -> String) {
        self.count += 1;
        if self.items.len() < MAX_PROBLEMS_KEPT {
            self.items.push(problem());
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn joined(&self) -> String {
        let mut s = self.items.join("; ");
        if self.count > self.items.len() {
            let _ = write!(s, "; and {} more", self.count - self.items.len());
        }
        s
    }
}

// === impl Ctx ===

impl Ctx<'_> {
    /// The node name, or the skipped report for a check that needs it.
    fn need_node(&self, name: CheckName) -> Result<&str, CheckReport> {
        self.node.ok_or_else(|| {
            CheckReport::skipped(name, "not evaluated: the subject names no valid node")
        })
    }

    fn is_fresh(&self, a: &Attestation) -> bool {
        is_fresh(a.received_at, self.now, self.policy)
    }

    // 3
    fn subject(&self) -> CheckReport {
        let problems = self.req.subject_problems();
        match (problems, self.node) {
            ([], Some(node)) => CheckReport::passed(
                CheckName::Subject,
                format!("CN={NODE_CN_PREFIX}{node}, O={NODES_GROUP}"),
            ),
            _ => {
                let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
                CheckReport::failed(
                    CheckName::Subject,
                    Outcome::Deny,
                    Reason::SubjectInvalid,
                    format!(
                        "{}; it must be exactly CN=system:node:<name>, O=system:nodes",
                        text.join("; ")
                    ),
                )
            }
        }
    }

    // 4
    fn requestor(&self) -> CheckReport {
        let node = match self.need_node(CheckName::Requestor) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let mut problems = Problems::default();
        let username = &self.csr.username;
        if username.strip_prefix(NODE_CN_PREFIX) != Some(node) {
            problems.push(|| {
                format!(
                    "created by {}, but the subject names {NODE_CN_PREFIX}{node}",
                    quoted(username)
                )
            });
        }
        if !self.csr.groups.iter().any(|g| g == NODES_GROUP) {
            problems.push(|| {
                let groups: Vec<String> = self.csr.groups.iter().map(|g| quoted(g)).collect();
                format!(
                    "the requestor's groups [{}] do not include {NODES_GROUP}",
                    Listed(&groups, groups.len())
                )
            });
        }
        if problems.is_empty() {
            CheckReport::passed(
                CheckName::Requestor,
                format!("created by {username}, a member of {NODES_GROUP}"),
            )
        } else {
            CheckReport::failed(
                CheckName::Requestor,
                Outcome::Deny,
                Reason::RequestorMismatch,
                problems.joined(),
            )
        }
    }

    // 5
    fn usages(&self) -> CheckReport {
        let (mut ds, mut ke, mut sa) = (false, false, false);
        let mut others = Problems::default();
        for u in &self.csr.usages {
            match u.as_str() {
                USAGE_DIGITAL_SIGNATURE => ds = true,
                USAGE_KEY_ENCIPHERMENT => ke = true,
                USAGE_SERVER_AUTH => sa = true,
                other => others.push(|| quoted(other)),
            }
        }
        let mut problems = Problems::default();
        if !others.is_empty() {
            problems.push(|| format!("usages {} are not allowed", others.joined()));
        }
        if !ds || !sa {
            problems.push(|| {
                let missing: Vec<&str> = [(!ds, USAGE_DIGITAL_SIGNATURE), (!sa, USAGE_SERVER_AUTH)]
                    .iter()
                    .filter(|(m, _)| *m)
                    .map(|(_, u)| *u)
                    .collect();
                format!("usages lack {}", missing.join(" and "))
            });
        }
        let requested = self.req.requested_usage();
        if requested.ca {
            problems.push(|| {
                "the request asks for a CA certificate (basicConstraints cA=true)".to_owned()
            });
        }
        if requested.cert_sign {
            problems
                .push(|| "the request's keyUsage asks for certificate or CRL signing".to_owned());
        }
        if !requested.other_ekus.is_empty() {
            problems.push(|| {
                format!(
                    "the request's extendedKeyUsage asks for {}",
                    Listed(&requested.other_ekus, requested.other_ekus.len())
                )
            });
        }
        if problems.is_empty() {
            let set = if ke {
                "digital signature, key encipherment, server auth"
            } else {
                "digital signature, server auth"
            };
            CheckReport::passed(CheckName::Usages, format!("usages are {set}"))
        } else {
            CheckReport::failed(
                CheckName::Usages,
                Outcome::Deny,
                Reason::UsagesInvalid,
                format!(
                    "{}; a kubelet serving certificate has exactly digital signature and server auth, optionally key encipherment",
                    problems.joined()
                ),
            )
        }
    }

    // 6
    fn san_shape(&self) -> CheckReport {
        let sans = self.req.sans();
        let mut problems = Problems::default();
        if sans.total == 0 {
            problems.push(|| "the request has no DNS or IP SAN".to_owned());
        }
        if sans.total > self.policy.max_sans {
            problems.push(|| {
                format!(
                    "the request has {} SANs, more than the limit of {}",
                    sans.total, self.policy.max_sans
                )
            });
        }
        for p in &sans.problems {
            problems.push(|| p.to_string());
        }
        problems.count += sans.problem_count.saturating_sub(sans.problems.len());
        if problems.is_empty() {
            let mut detail = String::new();
            if !sans.dns.is_empty() {
                let _ = write!(detail, "DNS {}", Listed(&sans.dns, sans.dns.len()));
            }
            if !sans.ips.is_empty() {
                if !detail.is_empty() {
                    detail.push_str("; ");
                }
                let _ = write!(detail, "IP {}", Listed(&sans.ips, sans.ips.len()));
            }
            CheckReport::passed(CheckName::SanShape, detail)
        } else {
            CheckReport::failed(
                CheckName::SanShape,
                Outcome::Deny,
                Reason::SanInvalid,
                problems.joined(),
            )
        }
    }

    // 7
    fn attestation_fresh(&self) -> CheckReport {
        let node = match self.need_node(CheckName::AttestationFresh) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let max_age = self.policy.attestation_max_age;
        match &self.facts.attestation {
            None => CheckReport::failed(
                CheckName::AttestationFresh,
                Outcome::Pending,
                Reason::AwaitingAttestation,
                format!(
                    "no attestation from {node}'s agent yet; the CSR is decided again when it reports"
                ),
            ),
            Some(a) => {
                let age = SignedDuration::from_secs(
                    self.now.duration_since(a.received_at).as_secs().max(0),
                );
                if self.facts.fresh {
                    CheckReport::passed(
                        CheckName::AttestationFresh,
                        format!(
                            "{node}'s agent reported {age:#} ago (received {}; limit {max_age})",
                            a.received_at
                        ),
                    )
                } else {
                    CheckReport::failed(
                        CheckName::AttestationFresh,
                        Outcome::Pending,
                        Reason::AttestationStale,
                        format!(
                            "{node}'s last attestation was received {age:#} ago ({}), longer than the {max_age} limit; is its agent running and connected?",
                            a.received_at
                        ),
                    )
                }
            }
        }
    }

    // 8
    fn dns_sans(&self) -> CheckReport {
        let dns = &self.req.sans().dns;
        if dns.is_empty() {
            return CheckReport::passed(CheckName::DnsSansAttested, "no DNS SANs requested");
        }
        // Names of the API server and of loopback, and names in the cluster's own
        // domains, are denied whatever the facts say.
        let mut not_allowed = Problems::default();
        for name in dns {
            if let Some(why) = reserved_name(name) {
                not_allowed.push(|| format!("{name} is {why}, never a node's"));
            } else if let Some(suffix) = self.policy.denied_suffix_of(name) {
                not_allowed.push(|| {
                    format!(
                        "{name} is in the denied domain {}",
                        suffix.as_str().trim_start_matches('.')
                    )
                });
            }
        }
        let deny_not_allowed = |more: Option<String>| {
            let mut detail = not_allowed.joined();
            if let Some(more) = more {
                let _ = write!(detail, "; {more}");
            }
            CheckReport::failed(
                CheckName::DnsSansAttested,
                Outcome::Deny,
                Reason::NameNotAllowed,
                detail,
            )
        };
        let attestation = match (self.node, &self.facts.attestation) {
            (Some(node), Some(a)) => Some((node, a)),
            _ => None,
        };
        let Some((node, a)) = attestation else {
            if !not_allowed.is_empty() {
                return deny_not_allowed(None);
            }
            return match self.need_node(CheckName::DnsSansAttested) {
                Err(skipped) => skipped,
                Ok(_) => CheckReport::skipped(
                    CheckName::DnsSansAttested,
                    "not evaluated: no attestation to compare the DNS names with",
                ),
            };
        };
        // The hostname is the agent's word; the node name is the certificate's.
        let hostname_counts = !self.policy.hostname_must_match_node_name
            || hostname_matches_node(&a.hostname, node, self.policy.allowed_suffixes());
        let owns =
            |name: &str| same_name(name, node) || (hostname_counts && same_name(name, &a.hostname));
        let mut missing = Problems::default();
        for name in dns {
            // Every reading of the name counts (with overlapping allowed suffixes there
            // are several), whatever the order of the policy's list.
            if !self.policy.readings(name).any(owns) {
                missing.push(|| name.clone());
            }
        }
        let with_suffix = if self.policy.allowed_dns_suffixes.is_empty() {
            String::new()
        } else {
            let suffixes: Vec<&str> = self
                .policy
                .allowed_dns_suffixes
                .iter()
                .map(|s| s.as_str())
                .collect();
            format!(
                ", with or without an allowed suffix ({})",
                suffixes.join(", ")
            )
        };
        let hostname = format!("its attested hostname {}", quoted(&a.hostname));
        let missing_detail = || {
            let names = Listed(&missing.items, missing.count);
            let is = if missing.count == 1 { "is" } else { "are" };
            if hostname_counts {
                format!("{names} {is} neither the node name {node} nor {hostname}{with_suffix}")
            } else {
                format!(
                    "{names} {is} not the node name {node}{with_suffix}; {hostname} does not count: it is neither the node name nor its first label, alone or followed by an allowed suffix"
                )
            }
        };
        if !not_allowed.is_empty() {
            return deny_not_allowed((!missing.is_empty()).then(missing_detail));
        }
        if missing.is_empty() {
            let hostname = if hostname_counts {
                format!(" or {hostname}")
            } else {
                String::new()
            };
            return CheckReport::passed(
                CheckName::DnsSansAttested,
                format!(
                    "{} {} the node name {node}{hostname}{}",
                    Listed(dns, dns.len()),
                    if dns.len() == 1 { "is" } else { "are" },
                    if self.policy.allowed_dns_suffixes.is_empty() {
                        ""
                    } else {
                        " (with an allowed suffix)"
                    }
                ),
            );
        }
        let (outcome, reason) = self.facts.missing(Reason::NameNotAttested);
        CheckReport::failed(
            CheckName::DnsSansAttested,
            outcome,
            reason,
            self.facts.explain(missing_detail()),
        )
    }

    // 9
    fn ip_sans(&self) -> CheckReport {
        let ips = &self.req.sans().ips;
        if ips.is_empty() {
            return CheckReport::passed(CheckName::IpSansAttested, "no IP SANs requested");
        }
        // Addresses of the cluster's Services are denied whatever the facts say
        // (core::services), as are the policy's denied networks.
        let rule = ServiceRule::new(self.services, self.nodes, self.node, self.policy);
        let mut not_allowed = Problems::default();
        let mut undecided = Problems::default();
        let mut own_service_addresses = Problems::default();
        for ip in ips {
            let judgement = rule.judge(*ip);
            if let ServiceJudgement::Denied(held) = judgement {
                not_allowed.push(|| held);
            } else if let Some(net) = self.policy.denied_network_of(*ip) {
                not_allowed.push(|| format!("{ip} is in the denied network {net}"));
            } else if !self.policy.is_allowed_address(*ip) {
                not_allowed.push(|| format!("{ip} is outside the allowed networks"));
            } else if let ServiceJudgement::Undecided(why) = judgement {
                undecided.push(|| why);
            } else if let ServiceJudgement::OwnAddress(note) = judgement {
                own_service_addresses.push(|| note);
            }
        }
        let waiting = rule.waiting();
        let attestation = match (self.node, &self.facts.attestation) {
            (Some(node), Some(a)) => Some((node, a)),
            _ => None,
        };
        let Some((node, a)) = attestation else {
            return if not_allowed.is_empty() {
                CheckReport::skipped(
                    CheckName::IpSansAttested,
                    "not evaluated: no attestation to compare the IP addresses with (none is a known Service address or outside the allowed networks)",
                )
            } else {
                CheckReport::failed(
                    CheckName::IpSansAttested,
                    Outcome::Deny,
                    Reason::AddressNotAllowed,
                    not_allowed.joined(),
                )
            };
        };
        let mut unattested = Problems::default();
        let mut found_on = Vec::with_capacity(ips.len().min(MAX_PROBLEMS_KEPT));
        for ip in ips {
            match self.interface_of(a, *ip) {
                Placement::Counted(iface) => {
                    if found_on.len() < MAX_PROBLEMS_KEPT {
                        found_on.push(format!("{ip} ({iface})"));
                    }
                }
                Placement::ExcludedOnly(iface) => {
                    unattested.push(|| format!("{ip} is only on {iface}, an excluded interface"))
                }
                Placement::Absent => unattested
                    .push(|| format!("{ip} is not on any interface {node}'s agent reported")),
            }
        }
        if !not_allowed.is_empty() {
            let mut detail = not_allowed.joined();
            if !unattested.is_empty() {
                let _ = write!(detail, "; {}", unattested.joined());
            }
            return CheckReport::failed(
                CheckName::IpSansAttested,
                Outcome::Deny,
                Reason::AddressNotAllowed,
                detail,
            );
        }
        // What the Service rule could not settle yet, for a detail.
        let unsettled = || {
            let mut parts: Vec<String> = waiting.iter().cloned().collect();
            if !undecided.is_empty() {
                parts.push(undecided.joined());
            }
            parts.join("; ")
        };
        if !unattested.is_empty() {
            let (outcome, reason) = self.facts.missing(Reason::AddressNotAttested);
            let mut detail = self.facts.explain(unattested.joined());
            if outcome == Outcome::Pending && (waiting.is_some() || !undecided.is_empty()) {
                let _ = write!(detail, "; {}", unsettled());
            }
            return CheckReport::failed(CheckName::IpSansAttested, outcome, reason, detail);
        }
        if let Some(waiting) = &waiting {
            return CheckReport::failed(
                CheckName::IpSansAttested,
                Outcome::Pending,
                Reason::AwaitingServices,
                waiting.clone(),
            );
        }
        if !undecided.is_empty() {
            return CheckReport::failed(
                CheckName::IpSansAttested,
                Outcome::Pending,
                Reason::AddressConflict,
                undecided.joined(),
            );
        }
        let mut detail = format!(
            "attested by {node}'s agent: {}",
            Listed(&found_on, ips.len())
        );
        if !own_service_addresses.is_empty() {
            let _ = write!(detail, "; {}", own_service_addresses.joined());
        }
        if let Some(note) = rule.fallback_note() {
            let _ = write!(detail, "; {note}");
        }
        match rule.not_evaluated() {
            // Never reported as passed without the Service rule.
            Some(missing) => CheckReport::skipped(
                CheckName::IpSansAttested,
                format!(
                    "not evaluated against the cluster's Services ({missing}); otherwise {detail}"
                ),
            ),
            None => CheckReport::passed(CheckName::IpSansAttested, detail),
        }
    }

    /// Where `ip` appears in an attestation.
    fn interface_of<'a>(&self, a: &'a Attestation, ip: IpAddr) -> Placement<'a> {
        let mut excluded = None;
        for iface in &a.interfaces {
            if iface.addresses.iter().any(|n| canonical_ip(n.addr()) == ip) {
                if !self.policy.is_excluded_interface(&iface.name) {
                    return Placement::Counted(&iface.name);
                }
                excluded.get_or_insert(iface.name.as_str());
            }
        }
        match excluded {
            Some(iface) => Placement::ExcludedOnly(iface),
            None => Placement::Absent,
        }
    }

    // 10
    fn peer_binding(&self) -> CheckReport {
        if !self.policy.peer_binding {
            return CheckReport::skipped(
                CheckName::PeerBinding,
                "not evaluated: peer binding is switched off in the policy",
            );
        }
        let node = match self.need_node(CheckName::PeerBinding) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let Some(a) = &self.facts.attestation else {
            return CheckReport::skipped(
                CheckName::PeerBinding,
                "not evaluated: no attestation, so no agent connection to compare",
            );
        };
        let Some(peer) = a.peer_address.map(canonical_ip) else {
            return CheckReport::failed(
                CheckName::PeerBinding,
                Outcome::Pending,
                Reason::PeerMismatch,
                format!("the approver recorded no source address for {node}'s agent"),
            );
        };
        let iface = a
            .interfaces
            .iter()
            .find(|i| i.addresses.iter().any(|n| canonical_ip(n.addr()) == peer));
        match iface {
            None => CheckReport::failed(
                CheckName::PeerBinding,
                Outcome::Pending,
                Reason::PeerMismatch,
                format!(
                    "{node}'s agent connected from {peer}, which is not one of the addresses it reported"
                ),
            ),
            Some(_) if !self.policy.is_allowed_address(peer) => CheckReport::failed(
                CheckName::PeerBinding,
                Outcome::Pending,
                Reason::PeerMismatch,
                format!("{node}'s agent connected from {peer}, outside the allowed networks"),
            ),
            // A SAN address is check 11's to find held elsewhere; report it once.
            // A loopback source means the agent shares the approver's network
            // namespace; every node has loopback addresses, so they are not compared.
            Some(i) => match (!self.req.sans().ips.contains(&peer) && !peer.is_loopback())
                .then(|| self.other_holder_of(node, peer))
                .flatten()
            {
                Some(other) => CheckReport::failed(
                    CheckName::PeerBinding,
                    Outcome::Pending,
                    Reason::PeerMismatch,
                    format!(
                        "{node}'s agent connected from {peer}, which it reports on {} but which is also {other}",
                        i.name
                    ),
                ),
                None => CheckReport::passed(
                    CheckName::PeerBinding,
                    format!(
                        "{node}'s agent connected from {peer}, its own address on {}",
                        i.name
                    ),
                ),
            },
        }
    }

    /// Who else holds `ip`: another node's fresh attestation (any interface)
    /// or another Node's `status.addresses`. Credentials used from another
    /// cluster machine connect from an address that machine's own agent reports.
    fn other_holder_of(&self, node: &str, ip: IpAddr) -> Option<String> {
        let mut holder = None;
        self.attestations.visit_claimants_of_ip(ip, &mut |other| {
            if other.node_name != node && self.is_fresh(other) {
                holder = Some(format!("attested by {}", other.node_name));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if holder.is_none()
            && let Some(nodes) = self.nodes
        {
            nodes.visit_nodes_listing(&AddressKey::Ip(ip), &mut |other| {
                if other != node {
                    holder = Some(format!("in Node {other}'s status.addresses"));
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
        }
        holder
    }

    // 11, attestations
    fn unique_among_attestations(&self) -> CheckReport {
        let node = match self.need_node(CheckName::UniqueAmongAttestations) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let sans = self.req.sans();
        let mut conflicts = Problems::default();
        for ip in &sans.ips {
            self.attestations.visit_claimants_of_ip(*ip, &mut |other| {
                // Any interface counts here: an address another node holds on
                // an excluded device (a Service IP on kube-ipvs0) is still not
                // this node's to claim.
                if other.node_name != node && self.is_fresh(other) {
                    match self.interface_of(other, *ip) {
                        Placement::Counted(iface) => conflicts.push(|| {
                            format!("{ip} is also attested by {} ({iface})", other.node_name)
                        }),
                        Placement::ExcludedOnly(iface) => conflicts.push(|| {
                            format!(
                                "{ip} is also attested by {} ({iface}, an excluded interface)",
                                other.node_name
                            )
                        }),
                        Placement::Absent => {}
                    }
                }
                ControlFlow::Continue(())
            });
        }
        for name in &sans.dns {
            for form in self.policy.readings(name) {
                self.attestations
                    .visit_claimants_of_name(form, &mut |other| {
                        if other.node_name != node && self.is_fresh(other) {
                            conflicts.push(|| {
                                format!(
                                    "{name} is the node name or hostname of {}",
                                    other.node_name
                                )
                            });
                        }
                        ControlFlow::Continue(())
                    });
            }
        }
        if conflicts.is_empty() {
            CheckReport::passed(
                CheckName::UniqueAmongAttestations,
                "no other node's fresh attestation reports any of these names or addresses",
            )
        } else {
            CheckReport::failed(
                CheckName::UniqueAmongAttestations,
                Outcome::Pending,
                Reason::AddressConflict,
                conflicts.joined(),
            )
        }
    }

    // 11, Node objects
    fn unique_among_nodes(&self) -> CheckReport {
        let Some(nodes) = self.nodes else {
            return CheckReport::skipped(
                CheckName::UniqueAmongNodes,
                "not evaluated: Node objects not given",
            );
        };
        let node = match self.need_node(CheckName::UniqueAmongNodes) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let sans = self.req.sans();
        let mut conflicts = Problems::default();
        for ip in &sans.ips {
            nodes.visit_nodes_listing(&AddressKey::Ip(*ip), &mut |other| {
                if other != node {
                    conflicts.push(|| format!("{ip} is in Node {other}'s status.addresses"));
                }
                ControlFlow::Continue(())
            });
        }
        for name in &sans.dns {
            for form in self.policy.readings(name) {
                nodes.visit_nodes_listing(&AddressKey::Name(form.to_owned()), &mut |other| {
                    if other != node {
                        conflicts
                            .push(|| format!("{name} is the name or an address of Node {other}"));
                    }
                    ControlFlow::Continue(())
                });
            }
        }
        if conflicts.is_empty() {
            CheckReport::passed(
                CheckName::UniqueAmongNodes,
                "no other Node lists any of these names or addresses",
            )
        } else {
            CheckReport::failed(
                CheckName::UniqueAmongNodes,
                Outcome::Pending,
                Reason::AddressConflict,
                conflicts.joined(),
            )
        }
    }

    // 12
    fn node_object(&self) -> CheckReport {
        let Some(nodes) = self.nodes else {
            return CheckReport::skipped(
                CheckName::NodeObject,
                "not evaluated: Node objects not given",
            );
        };
        let node = match self.need_node(CheckName::NodeObject) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let Some(record) = nodes.node(node) else {
            return CheckReport::failed(
                CheckName::NodeObject,
                Outcome::Pending,
                Reason::NodeMissing,
                format!("there is no Node named {node}"),
            );
        };
        let mut compared = Vec::with_capacity(2);
        let mut mismatches = Problems::default();
        if let Some(a) = self.facts.attestation.as_deref() {
            for c in id_comparisons(a, &record) {
                if c.matches {
                    compared.push(c.what);
                } else {
                    mismatches.push(|| {
                        format!(
                            "the agent's {} {} differs from Node {node}'s status.nodeInfo.{} {}",
                            c.what,
                            quoted(&c.ours),
                            c.field,
                            quoted(&c.theirs)
                        )
                    });
                }
            }
        }
        if !mismatches.is_empty() {
            return CheckReport::failed(
                CheckName::NodeObject,
                Outcome::Pending,
                Reason::NodeMismatch,
                mismatches.joined(),
            );
        }
        let ids = if compared.is_empty() {
            "no machine-id or boot-id known to both sides".to_owned()
        } else {
            format!("{} match", compared.join(" and "))
        };
        CheckReport::passed(CheckName::NodeObject, format!("Node {node} exists; {ids}"))
    }

    // 13
    fn expiration(&self) -> CheckReport {
        let max = self.policy.max_expiration_seconds;
        match self.csr.expiration_seconds {
            None => CheckReport::passed(
                CheckName::Expiration,
                format!(
                    "no expirationSeconds requested (the signer's --cluster-signing-duration applies; policy maximum {max}s)"
                ),
            ),
            Some(secs) if i64::from(secs) <= i64::from(max) => CheckReport::passed(
                CheckName::Expiration,
                format!("expirationSeconds {secs} is within the maximum of {max}"),
            ),
            Some(secs) => CheckReport::failed(
                CheckName::Expiration,
                Outcome::Deny,
                Reason::ExpirationTooLong,
                format!("expirationSeconds {secs} is more than the policy's maximum of {max}"),
            ),
        }
    }
}

/// Where an address appears in an attestation.
enum Placement<'a> {
    /// On a counted interface.
    Counted(&'a str),
    /// Only on excluded interfaces (the first one named).
    ExcludedOnly(&'a str),
    /// Nowhere.
    Absent,
}
