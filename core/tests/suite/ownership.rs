//! Check 15, `ip-sans-owned`: what the probes of a CSR's IP SANs found, by the policy's
//! `ownershipProof` mode — a receipt by another node or a refusal holds the SAN
//! (`AddressNotOwned`), no answer holds it only under `required` (`OwnershipUnproven`),
//! nothing is probed for a CSR that is denied anyway or for a SAN check 9 has not
//! accepted, and nothing here ever denies.

use std::collections::HashMap;
use std::net::IpAddr;

use rubber_stamp_core::policy::{OwnershipProof, ProofMode};
use rubber_stamp_core::{
    CheckName, CheckStatus, CsrInput, Decision, InterfaceFacts, NoProofs, Ownership,
    OwnershipLookup, ProofState, Reason, Verdict,
};

use super::support::{CsrSpec, World, at, csr_input, ip};

use CheckName as C;

/// The port the tests' approver probes.
const PORT: u16 = 10273;

/// Probe results by (CSR, node, SAN).
#[derive(Default)]
struct Proofs(HashMap<(String, String, IpAddr), ProofState>);

impl Proofs {
    fn with(mut self, node: &str, san: &str, state: ProofState) -> Self {
        self.0
            .insert(("csr-1".to_owned(), node.to_owned(), ip(san)), state);
        self
    }

    /// `node`'s agent received the probe sent to `san`.
    fn proven(self, node: &str, san: &str) -> Self {
        self.with(
            node,
            san,
            ProofState::Proven {
                at: at(40),
                local: ip(san),
            },
        )
    }
}

impl OwnershipLookup for Proofs {
    fn proof(&self, csr: &str, node: &str, san: IpAddr) -> Option<ProofState> {
        self.0.get(&(csr.to_owned(), node.to_owned(), san)).cloned()
    }
}

/// `node`'s CSR `csr-1` for its name and `ips`.
fn csr(node: &str, ips: &[&str]) -> CsrInput {
    let spec = CsrSpec::kubelet(node, &[node], ips);
    let mut csr = csr_input(node, &spec.pem());
    csr.name = "csr-1".to_owned();
    csr
}

/// worker-1 asks for its own name and both its addresses.
fn own_csr() -> CsrInput {
    csr("worker-1", &["10.0.0.11", "fd00::11"])
}

/// The two workers, each agent running its proof listener on [`PORT`], with `mode` for
/// every address.
fn world(mode: ProofMode) -> World {
    let mut world = World::two_workers();
    for node in ["worker-1", "worker-2"] {
        world.attestation_mut(node).proof_port = Some(PORT);
    }
    world.policy.ownership_proof = OwnershipProof {
        default: mode,
        ..OwnershipProof::default()
    };
    world
}

fn decide_on(world: &World, csr: &CsrInput, proofs: &dyn OwnershipLookup) -> Verdict {
    world.decide_with(
        csr,
        Ownership {
            lookup: proofs,
            port: PORT,
        },
    )
}

fn decide(world: &World, proofs: &dyn OwnershipLookup) -> Verdict {
    decide_on(world, &own_csr(), proofs)
}

fn owned(v: &Verdict) -> (CheckStatus, Option<Reason>, String) {
    let c = v.check(C::IpSansOwned).expect("check 15 is reported");
    (c.status(), c.reason(), c.detail().to_owned())
}

/// worker-1's IPv6 address proven, and what the latest probe of its IPv4 address found.
fn ipv4_found(state: ProofState) -> Proofs {
    Proofs::default()
        .proven("worker-1", "fd00::11")
        .with("worker-1", "10.0.0.11", state)
}

fn both_proven() -> Proofs {
    Proofs::default()
        .proven("worker-1", "10.0.0.11")
        .proven("worker-1", "fd00::11")
}

#[test]
fn unprobed_addresses_are_probed_both_ipv4_and_ipv6_and_wait_meanwhile() {
    for mode in [ProofMode::Required, ProofMode::Preferred] {
        let v = decide(&world(mode), &NoProofs);
        assert_eq!(v.decision(), Decision::Pending, "{mode}");
        let (status, reason, detail) = owned(&v);
        assert_eq!(status, CheckStatus::Failed);
        assert_eq!(
            reason,
            Some(Reason::AwaitingOwnershipProof),
            "resolves by itself"
        );
        assert!(detail.contains("about to be sent"), "{detail}");
        assert_eq!(v.probes_wanted(), [ip("10.0.0.11"), ip("fd00::11")]);
        assert_eq!(v.reason(), Some(Reason::AwaitingOwnershipProof));
    }
}

#[test]
fn proven_addresses_pass_and_nothing_more_is_probed() {
    let v = decide(&world(ProofMode::Required), &both_proven());
    assert_eq!(v.decision(), Decision::Approve, "{}", v.summary());
    let (status, _, detail) = owned(&v);
    assert_eq!(status, CheckStatus::Passed);
    assert!(
        detail.contains("worker-1's agent received the probes sent to 10.0.0.11"),
        "{detail}"
    );
    assert!(detail.contains("fd00::11"), "{detail}");
    assert!(v.probes_wanted().is_empty());
    assert!(v.unproven_allowed().is_empty());
}

#[test]
fn a_probe_still_in_flight_waits_without_a_second_probe() {
    let proofs = ipv4_found(ProofState::Probing { since: at(40) });
    let v = decide(&world(ProofMode::Preferred), &proofs);
    assert_eq!(v.decision(), Decision::Pending);
    assert_eq!(v.reason(), Some(Reason::AwaitingOwnershipProof));
    assert!(v.probes_wanted().is_empty());
}

#[test]
fn a_receipt_by_another_node_holds_the_csr_naming_both_nodes_under_either_mode() {
    for mode in [ProofMode::Required, ProofMode::Preferred] {
        let proofs = ipv4_found(ProofState::ReceivedByOther {
            node: "worker-2".to_owned(),
            local: ip("10.0.0.11"),
            at: at(41),
        });
        let v = decide(&world(mode), &proofs);
        assert_eq!(v.decision(), Decision::Pending, "never a denial ({mode})");
        assert_eq!(v.reason(), Some(Reason::AddressNotOwned));
        let (_, _, detail) = owned(&v);
        assert!(
            detail.contains("received by worker-2's agent") && detail.contains("not by worker-1's"),
            "{detail}"
        );
        assert_eq!(
            v.probes_wanted(),
            [ip("10.0.0.11")],
            "probed again: addresses move"
        );
    }
}

#[test]
fn a_refusal_while_the_requester_listens_holds_the_csr() {
    let proofs = ipv4_found(ProofState::Refused { at: at(41) });
    let v = decide(&world(ProofMode::Preferred), &proofs);
    assert_eq!(v.decision(), Decision::Pending);
    assert_eq!(v.reason(), Some(Reason::AddressNotOwned));
    let detail = owned(&v).2;
    assert!(
        detail.contains("refused the probe's connection"),
        "{detail}"
    );
}

#[test]
fn no_answer_holds_under_required_and_passes_with_a_warning_under_preferred() {
    let unanswered = || {
        ipv4_found(ProofState::Unanswered {
            at: at(42),
            attempts: 3,
            delivered: 0,
            what: "timed out after 2s".to_owned(),
        })
    };
    let v = decide(&world(ProofMode::Required), &unanswered());
    assert_eq!(v.decision(), Decision::Pending);
    assert_eq!(v.reason(), Some(Reason::OwnershipUnproven));
    let detail = owned(&v).2;
    assert!(
        detail.contains("timed out after 2s") && detail.contains("3 attempts"),
        "{detail}"
    );
    assert!(
        detail.contains("proof port"),
        "says what to check: {detail}"
    );
    assert_eq!(v.probes_wanted(), [ip("10.0.0.11")], "retried");

    let v = decide(&world(ProofMode::Preferred), &unanswered());
    assert_eq!(v.decision(), Decision::Approve, "{}", v.summary());
    assert_eq!(v.unproven_allowed(), [ip("10.0.0.11")]);
    let detail = owned(&v).2;
    assert!(detail.contains("passes unproven"), "{detail}");
}

#[test]
fn an_agent_without_a_proof_listener_is_probed_all_the_same() {
    // An agent of the previous version reports no proof_port. What a node says of its
    // listener never spares it the probe: a receipt by another node still holds it.
    let mut w = world(ProofMode::Preferred);
    w.attestation_mut("worker-1").proof_port = None;
    w.attestation_mut("worker-1").agent_version = Some("0.3.0".to_owned());
    let v = decide(&w, &NoProofs);
    assert_eq!(v.decision(), Decision::Pending);
    assert_eq!(v.reason(), Some(Reason::AwaitingOwnershipProof));
    assert_eq!(v.probes_wanted(), [ip("10.0.0.11"), ip("fd00::11")]);

    let other = ipv4_found(ProofState::ReceivedByOther {
        node: "worker-2".to_owned(),
        local: ip("10.0.0.11"),
        at: at(41),
    });
    let v = decide(&w, &other);
    assert_eq!(v.reason(), Some(Reason::AddressNotOwned), "no opting out");

    // No answer: no regression under preferred (a pass with a warning that says why).
    let unanswered = |what: &str| {
        let mut proofs = Proofs::default();
        for san in ["10.0.0.11", "fd00::11"] {
            proofs = proofs.with(
                "worker-1",
                san,
                ProofState::Unanswered {
                    at: at(42),
                    attempts: 1,
                    delivered: 0,
                    what: what.to_owned(),
                },
            );
        }
        proofs
    };
    let v = decide(&w, &unanswered("connection refused"));
    assert_eq!(v.decision(), Decision::Approve, "{}", v.summary());
    assert_eq!(v.unproven_allowed().len(), 2);
    let detail = owned(&v).2;
    assert!(
        detail.contains("version 0.3.0") && detail.contains("runs no proof listener"),
        "{detail}"
    );

    w.policy.ownership_proof.default = ProofMode::Required;
    let v = decide(&w, &unanswered("connection refused"));
    assert_eq!(v.decision(), Decision::Pending);
    assert_eq!(v.reason(), Some(Reason::OwnershipUnproven));

    w.policy.ownership_proof.default = ProofMode::Off;
    let v = decide(&w, &NoProofs);
    assert_eq!(v.decision(), Decision::Approve, "{}", v.summary());
    assert!(v.probes_wanted().is_empty(), "off never probes");
    assert!(v.unproven_allowed().is_empty(), "off needs no warning");
}

#[test]
fn a_port_mismatch_is_named() {
    let mut w = world(ProofMode::Required);
    w.attestation_mut("worker-1").proof_port = Some(4000);
    let v = decide(&w, &NoProofs);
    assert_eq!(
        v.probes_wanted().len(),
        2,
        "probed on the approver's own port"
    );
    let proofs = ipv4_found(ProofState::Unanswered {
        at: at(42),
        attempts: 1,
        delivered: 0,
        what: "connection refused".to_owned(),
    });
    let v = decide(&w, &proofs);
    assert_eq!(v.decision(), Decision::Pending);
    let detail = owned(&v).2;
    assert!(
        detail.contains("port 4000") && detail.contains("port 10273"),
        "{detail}"
    );
}

#[test]
fn a_nonce_taken_without_a_receipt_passes_preferred_only_after_three_tries() {
    // Something at the address accepted the nonce and no agent reported it: a foreign
    // listener, or the owner's proof port flooded so its receipt was dropped. One such
    // probe must not let a squatted address through.
    let delivered = |n: u32| {
        ipv4_found(ProofState::Unanswered {
            at: at(42),
            attempts: n,
            delivered: n,
            what: "the nonce was delivered, but no agent reported it".to_owned(),
        })
    };
    let w = world(ProofMode::Preferred);
    for n in 1..3 {
        let v = decide(&w, &delivered(n));
        assert_eq!(v.decision(), Decision::Pending, "{n}");
        assert_eq!(v.reason(), Some(Reason::AwaitingOwnershipProof));
        assert_eq!(v.probes_wanted(), [ip("10.0.0.11")]);
    }
    let v = decide(&w, &delivered(3));
    assert_eq!(v.decision(), Decision::Approve, "{}", v.summary());
    assert_eq!(v.unproven_allowed(), [ip("10.0.0.11")]);
}

#[test]
fn a_proof_older_than_the_attestation_max_age_is_made_again() {
    let w = world(ProofMode::Required);
    let old = ipv4_found(ProofState::Proven {
        at: at(-400),
        local: ip("10.0.0.11"),
    });
    let v = decide(&w, &old);
    assert_eq!(v.decision(), Decision::Pending);
    assert_eq!(v.reason(), Some(Reason::AwaitingOwnershipProof));
    assert_eq!(v.probes_wanted(), [ip("10.0.0.11")]);
}

#[test]
fn off_networks_are_never_probed_and_the_longest_prefix_wins() {
    let mut w = world(ProofMode::Required);
    w.policy
        .ownership_proof
        .cidrs
        .insert("fd00::/64".parse().expect("net"), ProofMode::Off);
    let v = decide(&w, &Proofs::default().proven("worker-1", "10.0.0.11"));
    assert_eq!(v.decision(), Decision::Approve, "{}", v.summary());
    let detail = owned(&v).2;
    assert!(
        detail.contains("fd00::11 is not probed (`off` for fd00::/64)"),
        "{detail}"
    );
    assert!(v.probes_wanted().is_empty());
}

#[test]
fn nothing_is_probed_for_a_csr_denied_anyway_or_an_address_check_9_refuses() {
    // worker-1 asks for worker-2's address too: its complete report, received after the
    // CSR, does not have it — a denial by check 9, so no probe.
    let w = world(ProofMode::Required);
    let v = decide_on(&w, &csr("worker-1", &["10.0.0.11", "10.0.0.12"]), &NoProofs);
    assert_eq!(v.decision(), Decision::Deny);
    assert_eq!(owned(&v).0, CheckStatus::Skipped);
    assert!(v.probes_wanted().is_empty());

    // An address outside the allowed networks is never probed either.
    let mut w = world(ProofMode::Required);
    w.policy.allowed_cidrs = vec!["fd00::/8".parse().expect("net")];
    let v = decide(&w, &NoProofs);
    assert_eq!(v.decision(), Decision::Deny);
    assert!(v.probes_wanted().is_empty(), "{:?}", v.probes_wanted());
}

#[test]
fn for_a_squatter_the_networks_word_leads_the_conflict() {
    // worker-2 puts worker-1's address on a dummy interface and asks for it: check 11
    // holds it (AddressConflict), and the probe reached worker-1.
    let mut w = world(ProofMode::Required);
    w.attestation_mut("worker-2")
        .interfaces
        .push(InterfaceFacts {
            name: "dummy0".to_owned(),
            addresses: vec!["10.0.0.11/32".parse().expect("net")],
        });
    let proofs = Proofs::default().proven("worker-2", "10.0.0.12").with(
        "worker-2",
        "10.0.0.11",
        ProofState::ReceivedByOther {
            node: "worker-1".to_owned(),
            local: ip("10.0.0.11"),
            at: at(40),
        },
    );
    let v = decide_on(&w, &csr("worker-2", &["10.0.0.12", "10.0.0.11"]), &proofs);
    assert_eq!(v.decision(), Decision::Pending);
    let failed: Vec<CheckName> = v.failed().map(|c| c.name()).collect();
    assert!(failed.contains(&C::UniqueAmongAttestations), "{failed:?}");
    assert!(failed.contains(&C::IpSansOwned), "{failed:?}");
    assert_eq!(
        v.reason(),
        Some(Reason::AddressNotOwned),
        "two independent checks; the network's word leads"
    );
}

#[test]
fn offline_there_is_no_check_15() {
    let v = world(ProofMode::Required).decide(&own_csr());
    assert!(v.check(C::IpSansOwned).is_none());
    assert!(v.probes_wanted().is_empty());
}
