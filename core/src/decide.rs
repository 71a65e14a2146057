//! `decide`: the checks of docs/design.md, in order, over plain data (each check is a file
//! of the private `checks` module).
//!
//! Every check runs and is reported even after another failed, so one verdict
//! explains everything; only an out-of-scope CSR (1) and an unusable request
//! (2) stop early, and then the remaining checks are reported as skipped.

use std::fmt;

use jiff::Timestamp;

use crate::attestation::AttestationLookup;
use crate::checks::{Ctx, Facts, authorization};
use crate::input::{AccessReview, CsrInput, KUBELET_SERVING_SIGNER};
use crate::names::quoted;
use crate::node::NodeLookup;
use crate::ownership::Ownership;
use crate::policy::Policy;
use crate::request::{ParsedRequest, RequestError, parse_request};
use crate::services::ServiceLookup;
use crate::verdict::{
    CheckName, CheckReport, CheckStatus, Outcome, Reason, SupportingAttestation, Verdict,
};

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
    /// Check 15's probes, where they can be made (the controller); `None` offline, where
    /// check 15 is not reported at all.
    pub ownership: Option<Ownership<'a>>,
}

impl fmt::Debug for Observed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed")
            .field("nodes", &self.nodes.is_some())
            .field("services", &self.services.is_some())
            .field("access_review", &self.access_review)
            .field("ownership", &self.ownership)
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
            ownership: None,
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
        ownership,
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
    // 15, reported beside check 9. Addresses are probed only when nothing denies the CSR
    // and check 9 found every IP SAN allowed and attested: a node's CSR can make the
    // approver probe only addresses the policy allows and the node itself reports.
    let (mut probes, mut unproven_allowed) = (Vec::new(), Vec::new());
    if let Some(ownership) = ownership {
        let eligible = !checks.iter().any(|c| c.outcome() == Some(Outcome::Deny))
            && checks.iter().any(|c| {
                c.name() == CheckName::IpSansAttested && c.status() == CheckStatus::Passed
            });
        let owned = ctx.ip_sans_owned(ownership, eligible);
        probes = owned.probe;
        unproven_allowed = owned.unproven_allowed;
        let at = checks
            .iter()
            .position(|c| c.name() == CheckName::IpSansAttested)
            .map_or(checks.len(), |i| i + 1);
        checks.insert(at, owned.report);
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
        .with_ownership(probes, unproven_allowed)
}

fn out_of_scope(csr: &CsrInput, observed: Observed<'_>, policy: &Policy) -> Verdict {
    let detail = if csr.signer_name != KUBELET_SERVING_SIGNER {
        format!(
            "signer is {}, not {KUBELET_SERVING_SIGNER}",
            quoted(&csr.signer_name)
        )
    } else {
        match csr.final_condition() {
            Some(c) => format!("the CSR already has the {c} condition"),
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
    if observed.ownership.is_some() {
        checks.push(CheckReport::skipped(CheckName::IpSansOwned, why));
    }
}
