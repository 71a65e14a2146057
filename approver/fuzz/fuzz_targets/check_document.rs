//! Fuzzes the documents `check` (and `run`, for the policy) read from files:
//! arbitrary bytes as a CSR object, a Node list, a Service list, a ServiceCIDR
//! list, an attestation snapshot and a policy, in YAML or JSON; whatever loads
//! is converted and decided on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rubber_stamp_approver::documents as input;
use rubber_stamp_approver::k8s;
use std::sync::Arc;

use rubber_stamp_core::{
    AttestationSet, Listing, NodeSet, Observed, Policy,
    ServiceSet, decide,
};

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
        .map(|ns| ns.iter().map(k8s::node_record).collect());
    let mut services = ServiceSet::new();
    if let Ok(list) = input::services_document(text, "fuzz") {
        for s in &list {
            services.insert(Arc::new(k8s::service_record(s)));
        }
        services.set_services_listing(Listing::Listed);
    }
    if let Ok(list) = input::service_cidrs_document(text, "fuzz") {
        for c in &list {
            services.insert_range(Arc::new(k8s::service_range(c)));
        }
        services.set_ranges_listing(Listing::Listed);
    }
    if let Ok(csr) = input::csr_document(text, "fuzz") {
        let csr = k8s::csr_input(&csr);
        let now = csr.created_at.unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let observed = Observed {
            attestations: &attestations,
            nodes: nodes.as_ref().map(|n| n as _),
            services: Some(&services),
            access_review: None,
            ownership: None,
        };
        let verdict = decide(&csr, observed, &policy, now);
        let _ = verdict.summary();
    }
});
