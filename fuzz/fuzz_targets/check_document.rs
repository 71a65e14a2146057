//! Fuzzes the documents `check` (and `run`, for the policy) read from files:
//! arbitrary bytes as a CSR object, a Node list, an attestation snapshot and a
//! policy, in YAML or JSON; whatever loads is converted and decided on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rubber_stamp_approver::cli::input;
use rubber_stamp_approver::core::{AttestationSet, CsrInput, NodeRecord, NodeSet, Policy, decide};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = Policy::from_yaml(text).unwrap_or_default();
    let attestations: AttestationSet = input::attestations_document(text, "fuzz")
        .map(Into::into)
        .unwrap_or_default();
    let nodes: Option<NodeSet> = input::nodes_document(text, "fuzz")
        .ok()
        .map(|ns| ns.iter().map(NodeRecord::from).collect());
    if let Ok(csr) = input::csr_document(text, "fuzz") {
        let csr = CsrInput::from(&csr);
        let now = csr.created_at.unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let verdict = decide(
            &csr,
            &attestations,
            nodes.as_ref().map(|n| n as _),
            &policy,
            now,
        );
        let _ = verdict.summary();
    }
});
