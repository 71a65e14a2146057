//! The facts of one CertificateSigningRequest that the decision reads, as plain data.
//!
//! The controller and `check` fill this from a `k8s_openapi`
//! CertificateSigningRequest (see the approver's `k8s` module); the core never sees
//! Kubernetes types.

use std::collections::BTreeMap;

use jiff::Timestamp;

/// The signer this approver acts for.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// Condition types after which a CSR is never touched again.
pub const FINAL_CONDITIONS: [&str; 3] = ["Approved", "Denied", "Failed"];

/// One CertificateSigningRequest, reduced to what `decide` needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsrInput {
    /// `metadata.name`.
    pub name: String,
    /// `spec.signerName`.
    pub signer_name: String,
    /// `spec.request`: the PEM text the base64 field decodes to.
    /// `decide_parsed` never reads it, so a caller that keeps a parsed
    /// request may leave it empty.
    pub request: Vec<u8>,
    /// `spec.usages`, as Kubernetes spells them (`digital signature`, …).
    pub usages: Vec<String>,
    /// `spec.username`: who created the CSR (set by the API server).
    pub username: String,
    /// `spec.uid`.
    pub uid: String,
    /// `spec.groups`.
    pub groups: Vec<String>,
    /// `spec.extra`.
    pub extra: BTreeMap<String, Vec<String>>,
    /// `spec.expirationSeconds`.
    pub expiration_seconds: Option<i32>,
    /// `metadata.creationTimestamp`, when known (the API server's clock).
    pub created_at: Option<Timestamp>,
    /// When the deciding approver first saw the CSR, on the same clock that stamps
    /// attestations' `receivedAt`. A report received after this describes the node
    /// after the CSR existed, judged on one clock; without it (offline `check`) the
    /// decision compares with `created_at` and allows the policy's `clockSkew`.
    pub seen_at: Option<Timestamp>,
    /// The `type` of every entry in `status.conditions`.
    pub conditions: Vec<String>,
}

impl CsrInput {
    /// The first final condition (`Approved`, `Denied`, `Failed`) the CSR carries.
    pub fn final_condition(&self) -> Option<&str> {
        self.conditions
            .iter()
            .map(String::as_str)
            .find(|c| FINAL_CONDITIONS.contains(c))
    }

    /// True when the CSR is for the kubelet-serving signer and not yet final:
    /// the only CSRs the approver acts on (check 1).
    pub fn in_scope(&self) -> bool {
        self.signer_name == KUBELET_SERVING_SIGNER && self.final_condition().is_none()
    }
}

/// Check 14's input: whether the CSR's requestor may `create`
/// `certificates.k8s.io/certificatesigningrequests`, subresource `selfnodeserver`, as a
/// SubjectAccessReview answered. The controller makes the review only once every other
/// check passes ([`Verdict::awaits_access_review`](crate::Verdict::awaits_access_review)) and decides again with the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessReview {
    /// Not made (yet): check 14 is reported as not evaluated.
    NotMade,
    /// The requestor may; the reviewer's words.
    Allowed(String),
    /// The requestor may not; the reviewer's words.
    Refused(String),
}
