//! The verdict: the decision and, for every check, its name, result, reason and plain-words detail.

use std::fmt;
use std::net::IpAddr;

use jiff::Timestamp;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::policy::DenyMode;

/// What the approver does with a CSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Approve it.
    Approve,
    /// Deny it (only for definite violations; cannot be undone).
    Deny,
    /// Leave it and decide again when the facts change.
    Pending,
    /// Not ours (other signer, or already final): never touch it.
    Ignore,
}

impl Decision {
    /// `approve`, `deny`, `pending` or `ignore`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Pending => "pending",
            Self::Ignore => "ignore",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The checks of docs/design.md, in order, with stable kebab-case names.
///
/// Check 11 has two halves so that, offline without Node objects, the Node
/// half can be reported as skipped while the attestation half still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckName {
    /// 1: signer is kubelet-serving, no final condition.
    Scope,
    /// 2: one PEM CSR block, PKCS#10 DER, size limit, self-signature.
    Parse,
    /// 3: subject exactly `CN=system:node:<name>, O=system:nodes`.
    Subject,
    /// 4: the requestor is that node, in `system:nodes`.
    Requestor,
    /// 5: usages digital signature + server auth (+ key encipherment), no CA.
    Usages,
    /// 6: SAN kinds, count and spelling.
    SanShape,
    /// 7: a fresh attestation from the node's agent.
    AttestationFresh,
    /// 8: every DNS SAN is the node name or attested hostname (plus an allowed suffix).
    DnsSansAttested,
    /// 9: every IP SAN is attested on a counted interface and allowed by the CIDR policy.
    IpSansAttested,
    /// 10: the agent connected from one of the node's addresses.
    PeerBinding,
    /// 11, first half: no other node's fresh attestation claims a SAN.
    UniqueAmongAttestations,
    /// 11, second half: no other Node object lists a SAN.
    UniqueAmongNodes,
    /// 12: the Node exists and its machine-id / boot-id match.
    NodeObject,
    /// 13: `expirationSeconds` within the policy's maximum.
    Expiration,
    /// 14 (controller only): SubjectAccessReview for `selfnodeserver`.
    Authorization,
    /// 15 (controller only): every IP SAN the policy subjects to proof reached the
    /// requesting node's agent. Reported right after check 9, beside the other IP SAN
    /// check, so that its reason leads when the network contradicts the node's word.
    IpSansOwned,
}

impl CheckName {
    /// The checks `decide` reports, in order (14 is added by the controller).
    pub const DECIDED: [Self; 14] = [
        Self::Scope,
        Self::Parse,
        Self::Subject,
        Self::Requestor,
        Self::Usages,
        Self::SanShape,
        Self::AttestationFresh,
        Self::DnsSansAttested,
        Self::IpSansAttested,
        Self::PeerBinding,
        Self::UniqueAmongAttestations,
        Self::UniqueAmongNodes,
        Self::NodeObject,
        Self::Expiration,
    ];

    /// The stable kebab-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Scope => "scope",
            Self::Parse => "parse",
            Self::Subject => "subject",
            Self::Requestor => "requestor",
            Self::Usages => "usages",
            Self::SanShape => "san-shape",
            Self::AttestationFresh => "attestation-fresh",
            Self::DnsSansAttested => "dns-sans-attested",
            Self::IpSansAttested => "ip-sans-attested",
            Self::PeerBinding => "peer-binding",
            Self::UniqueAmongAttestations => "unique-among-attestations",
            Self::UniqueAmongNodes => "unique-among-nodes",
            Self::NodeObject => "node-object",
            Self::Expiration => "expiration",
            Self::Authorization => "authorization",
            Self::IpSansOwned => "ip-sans-owned",
        }
    }

    /// The check's number in docs/design.md.
    pub const fn number(self) -> u8 {
        match self {
            Self::Scope => 1,
            Self::Parse => 2,
            Self::Subject => 3,
            Self::Requestor => 4,
            Self::Usages => 5,
            Self::SanShape => 6,
            Self::AttestationFresh => 7,
            Self::DnsSansAttested => 8,
            Self::IpSansAttested => 9,
            Self::PeerBinding => 10,
            Self::UniqueAmongAttestations | Self::UniqueAmongNodes => 11,
            Self::NodeObject => 12,
            Self::Expiration => 13,
            Self::Authorization => 14,
            Self::IpSansOwned => 15,
        }
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failed check asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Leave the CSR pending.
    Pending,
    /// Deny the CSR.
    Deny,
    /// Ignore the CSR (check 1 only).
    Ignore,
}

impl Outcome {
    /// `pending`, `deny` or `ignore`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Deny => "deny",
            Self::Ignore => "ignore",
        }
    }
}

/// A machine-readable reason for a failed check; the controller maps these
/// to Event reasons. Stable PascalCase names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Reason {
    /// Check 1: another signer, or the CSR is already final.
    OutOfScope,
    /// Check 2: the request is not one valid, self-signed PKCS#10 request.
    MalformedRequest,
    /// Check 3: the subject is not exactly `CN=system:node:<name>, O=system:nodes`.
    SubjectInvalid,
    /// Check 4: the requestor is not the node named in the subject.
    RequestorMismatch,
    /// Check 5: usages other than a kubelet serving certificate's.
    UsagesInvalid,
    /// Check 6: a SAN of the wrong kind or spelling, or too many.
    SanInvalid,
    /// Check 8 (deny): a DNS SAN the node's fresh facts do not support.
    NameNotAttested,
    /// Check 9 (deny): an IP SAN the node's fresh facts do not support.
    AddressNotAttested,
    /// Check 9: an IP SAN outside the allowed or inside the denied networks.
    AddressNotAllowed,
    /// Check 8: a DNS SAN in a denied domain (the cluster's Service names).
    NameNotAllowed,
    /// Check 13: a longer certificate than the policy allows.
    ExpirationTooLong,
    /// Check 7: no attestation from the node's agent.
    AwaitingAttestation,
    /// Check 7: the node's attestation is older than the maximum age.
    AttestationStale,
    /// Checks 8/9 (pending): a SAN missing from facts that predate the CSR
    /// (or are stale); a fresh report decides.
    UnattestedAddress,
    /// Check 10: the agent connected from an address that is not the node's.
    PeerMismatch,
    /// Check 11: another node attests or lists a SAN.
    AddressConflict,
    /// Check 12: no Node object of that name.
    NodeMissing,
    /// Check 12: the Node's machine-id or boot-id differs from the attestation's.
    NodeMismatch,
    /// Check 14: the SubjectAccessReview did not allow the requestor.
    SubjectAccessDenied,
    /// Check 9: the Services or ServiceCIDRs have not been listed yet, so no IP SAN can
    /// be told apart from a Service's address.
    AwaitingServices,
    /// Check 15: the network delivers an IP SAN to another host (another node's agent
    /// received the probe, or the address refused it while the requester listened).
    AddressNotOwned,
    /// Check 15: no probe of an IP SAN has reached the requesting node's agent: none
    /// answered (under `required`), or its agent runs no proof listener.
    OwnershipUnproven,
    /// Check 15: a probe of an IP SAN is about to be sent or under way; it decides.
    AwaitingOwnershipProof,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Self; 23] = [
        Self::OutOfScope,
        Self::MalformedRequest,
        Self::SubjectInvalid,
        Self::RequestorMismatch,
        Self::UsagesInvalid,
        Self::SanInvalid,
        Self::NameNotAttested,
        Self::AddressNotAttested,
        Self::AddressNotAllowed,
        Self::NameNotAllowed,
        Self::ExpirationTooLong,
        Self::AwaitingAttestation,
        Self::AttestationStale,
        Self::UnattestedAddress,
        Self::PeerMismatch,
        Self::AddressConflict,
        Self::NodeMissing,
        Self::NodeMismatch,
        Self::SubjectAccessDenied,
        Self::AwaitingServices,
        Self::AddressNotOwned,
        Self::OwnershipUnproven,
        Self::AwaitingOwnershipProof,
    ];

    /// The PascalCase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OutOfScope => "OutOfScope",
            Self::MalformedRequest => "MalformedRequest",
            Self::SubjectInvalid => "SubjectInvalid",
            Self::RequestorMismatch => "RequestorMismatch",
            Self::UsagesInvalid => "UsagesInvalid",
            Self::SanInvalid => "SanInvalid",
            Self::NameNotAttested => "NameNotAttested",
            Self::AddressNotAttested => "AddressNotAttested",
            Self::AddressNotAllowed => "AddressNotAllowed",
            Self::NameNotAllowed => "NameNotAllowed",
            Self::ExpirationTooLong => "ExpirationTooLong",
            Self::AwaitingAttestation => "AwaitingAttestation",
            Self::AttestationStale => "AttestationStale",
            Self::UnattestedAddress => "UnattestedAddress",
            Self::PeerMismatch => "PeerMismatch",
            Self::AddressConflict => "AddressConflict",
            Self::NodeMissing => "NodeMissing",
            Self::NodeMismatch => "NodeMismatch",
            Self::SubjectAccessDenied => "SubjectAccessDenied",
            Self::AwaitingServices => "AwaitingServices",
            Self::AddressNotOwned => "AddressNotOwned",
            Self::OwnershipUnproven => "OwnershipUnproven",
            Self::AwaitingOwnershipProof => "AwaitingOwnershipProof",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a check passed, failed, or could not be evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// The check holds.
    Passed,
    /// The check does not hold; see the outcome and reason.
    Failed,
    /// The check could not be evaluated (missing input, or an earlier check
    /// stopped the decision). Never counts as passed.
    Skipped,
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    name: CheckName,
    status: CheckStatus,
    outcome: Option<Outcome>,
    reason: Option<Reason>,
    would_deny: bool,
    detail: String,
}

// === impl CheckReport ===

impl CheckReport {
    /// A check that holds.
    pub fn passed(name: CheckName, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: CheckStatus::Passed,
            outcome: None,
            reason: None,
            would_deny: false,
            detail: detail.into(),
        }
    }

    /// A check that does not hold.
    pub fn failed(
        name: CheckName,
        outcome: Outcome,
        reason: Reason,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            name,
            status: CheckStatus::Failed,
            outcome: Some(outcome),
            reason: Some(reason),
            would_deny: false,
            detail: detail.into(),
        }
    }

    /// A check that could not be evaluated; `detail` says why.
    pub fn skipped(name: CheckName, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: CheckStatus::Skipped,
            outcome: None,
            reason: None,
            would_deny: false,
            detail: detail.into(),
        }
    }

    /// Which check.
    pub fn name(&self) -> CheckName {
        self.name
    }

    /// Passed, failed or skipped.
    pub fn status(&self) -> CheckStatus {
        self.status
    }

    /// `Some(true)` passed, `Some(false)` failed, `None` skipped.
    pub fn passed_flag(&self) -> Option<bool> {
        match self.status {
            CheckStatus::Passed => Some(true),
            CheckStatus::Failed => Some(false),
            CheckStatus::Skipped => None,
        }
    }

    /// For a failed check, what it asks for.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// For a failed check, the machine reason.
    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// True when this check would have denied but the deny mode is `never`.
    pub fn would_deny(&self) -> bool {
        self.would_deny
    }

    /// The plain-words detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    fn apply_deny_mode(&mut self, mode: DenyMode) {
        if mode == DenyMode::Never && self.outcome == Some(Outcome::Deny) {
            self.outcome = Some(Outcome::Pending);
            self.would_deny = true;
            self.detail = format!(
                "would be denied, left pending because the deny mode is `never`: {}",
                self.detail
            );
        }
    }
}

impl Serialize for CheckReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let failed = self.status == CheckStatus::Failed;
        let mut st = s.serialize_struct("CheckReport", 8)?;
        st.serialize_field("name", self.name.as_str())?;
        st.serialize_field("number", &self.name.number())?;
        st.serialize_field("passed", &self.passed_flag())?;
        st.serialize_field("status", &self.status)?;
        if failed {
            st.serialize_field("outcome", &self.outcome)?;
            st.serialize_field("reason", &self.reason)?;
        } else {
            st.skip_field("outcome")?;
            st.skip_field("reason")?;
        }
        if self.would_deny {
            st.serialize_field("wouldDeny", &true)?;
        } else {
            st.skip_field("wouldDeny")?;
        }
        st.serialize_field("detail", &self.detail)?;
        st.end()
    }
}

/// The attestation an approval rests on, for the approval message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportingAttestation {
    /// The node (from the agent's client certificate).
    pub node: String,
    /// When the approver received the report.
    pub received_at: Timestamp,
    /// The agent's source address, as the approver saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<IpAddr>,
}

/// The decision on one CSR and the result of every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    decision: Decision,
    node: Option<String>,
    checks: Vec<CheckReport>,
    supporting: Option<SupportingAttestation>,
    deny_mode: DenyMode,
    probes: Vec<IpAddr>,
    unproven_allowed: Vec<IpAddr>,
}

// === impl Verdict ===

impl Verdict {
    /// A verdict from check results; applies the deny mode and takes the most
    /// severe outcome (ignore, then deny, then pending, else approve).
    pub fn new(
        node: Option<String>,
        checks: Vec<CheckReport>,
        supporting: Option<SupportingAttestation>,
        deny_mode: DenyMode,
    ) -> Self {
        let mut v = Self {
            decision: Decision::Approve,
            node,
            checks,
            supporting,
            deny_mode,
            probes: Vec::new(),
            unproven_allowed: Vec::new(),
        };
        for c in &mut v.checks {
            c.apply_deny_mode(deny_mode);
        }
        v.decision = v.compute_decision();
        v
    }

    fn compute_decision(&self) -> Decision {
        let worst = self.checks.iter().filter_map(|c| c.outcome).max();
        match worst {
            None => Decision::Approve,
            Some(Outcome::Pending) => Decision::Pending,
            Some(Outcome::Deny) => Decision::Deny,
            Some(Outcome::Ignore) => Decision::Ignore,
        }
    }

    /// With check 15's requests: the IP SANs to probe (again), and those that pass
    /// unproven under `preferred`.
    pub(crate) fn with_ownership(
        mut self,
        probes: Vec<IpAddr>,
        unproven_allowed: Vec<IpAddr>,
    ) -> Self {
        self.probes = probes;
        self.unproven_allowed = unproven_allowed;
        self
    }

    /// The IP SANs check 15 wants probed (again): the controller sends each a nonce,
    /// within its rate limits and backoff, and decides again when a probe ends.
    pub fn probes_wanted(&self) -> &[IpAddr] {
        &self.probes
    }

    /// The IP SANs that passed check 15 unproven because the policy `preferred` proof
    /// for them: an approval then comes with a Warning.
    pub fn unproven_allowed(&self) -> &[IpAddr] {
        &self.unproven_allowed
    }

    /// The decision.
    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// The node named by the request's subject, when it could be read.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Every check, in order.
    pub fn checks(&self) -> &[CheckReport] {
        &self.checks
    }

    /// One check's report.
    pub fn check(&self, name: CheckName) -> Option<&CheckReport> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The checks that failed, in order.
    pub fn failed(&self) -> impl Iterator<Item = &CheckReport> + '_ {
        self.checks
            .iter()
            .filter(|c| c.status == CheckStatus::Failed)
    }

    /// The reason of the first failed check whose outcome is the decision:
    /// what an Event for this verdict should be called (`None` on approve).
    pub fn reason(&self) -> Option<Reason> {
        let wanted = match self.decision {
            Decision::Approve => return None,
            Decision::Pending => Outcome::Pending,
            Decision::Deny => Outcome::Deny,
            Decision::Ignore => Outcome::Ignore,
        };
        self.failed()
            .find(|c| c.outcome == Some(wanted))
            .and_then(|c| c.reason)
    }

    /// The attestation the SAN checks were made against, when it was fresh.
    pub fn supporting_attestation(&self) -> Option<&SupportingAttestation> {
        self.supporting.as_ref()
    }

    /// True when the verdict is pending and every failed check is a SAN
    /// missing from facts that predate the CSR: the controller should then
    /// challenge the node's agent for a fresh report.
    pub fn pending_only_on_predating_facts(&self) -> bool {
        self.decision == Decision::Pending
            && self.failed().count() > 0
            && self
                .failed()
                .all(|c| c.reason == Some(Reason::UnattestedAddress) && !c.would_deny)
    }

    /// True when at least one failed check is a SAN missing from facts that
    /// predate the CSR (a fresh report might change the verdict).
    pub fn waits_on_predating_facts(&self) -> bool {
        self.failed()
            .any(|c| c.reason == Some(Reason::UnattestedAddress))
    }

    /// One line in plain words: what failed (or that everything passed).
    pub fn summary(&self) -> String {
        let failed: Vec<String> = self
            .failed()
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if failed.is_empty() {
            let skipped = self
                .checks
                .iter()
                .filter(|c| c.status == CheckStatus::Skipped)
                .count();
            match (&self.supporting, skipped) {
                (Some(s), 0) => format!(
                    "all checks passed against {}'s attestation received at {}",
                    s.node, s.received_at
                ),
                (Some(s), n) => format!(
                    "all evaluated checks passed against {}'s attestation received at {} ({n} skipped)",
                    s.node, s.received_at
                ),
                (None, 0) => "all checks passed".to_owned(),
                (None, n) => format!("all evaluated checks passed ({n} skipped)"),
            }
        } else {
            failed.join("; ")
        }
    }

    /// True when every check passed or was skipped and check 14's SubjectAccessReview has
    /// not been made: the controller makes it now and decides again with the answer
    /// (`Observed::access_review`).
    pub fn awaits_access_review(&self) -> bool {
        self.decision == Decision::Approve
            && self
                .check(CheckName::Authorization)
                .is_some_and(|c| c.status == CheckStatus::Skipped)
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Verdict", 6)?;
        st.serialize_field("decision", &self.decision)?;
        st.serialize_field("node", &self.node)?;
        st.serialize_field("reason", &self.reason())?;
        st.serialize_field("summary", &self.summary())?;
        st.serialize_field("supportingAttestation", &self.supporting)?;
        st.serialize_field("checks", &self.checks)?;
        st.end()
    }
}
