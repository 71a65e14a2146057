//! Check 15 (controller only): every IP SAN the policy subjects to proof reaches the
//! requesting node — the approver sent a nonce to it on the agents' proof port, and the
//! requesting node's agent reported it on its own stream (docs/design.md, "Proof of
//! address ownership").
//!
//! A receipt by another node, or a refusal while the requester listens, holds the SAN
//! (`AddressNotOwned`); no answer holds it under `required` (`OwnershipUnproven`) and lets
//! it pass with a warning under `preferred`. Nothing here ever denies: what the network
//! shows is a moment's routing, and floating addresses legitimately move.

use super::*;
use crate::ownership::{DELIVERED_UNREPORTED_BEFORE_PASSING, Ownership, ProofState};
use crate::policy::ProofMode;

/// What to check when no agent answers, for the detail.
const UNANSWERED_HINT: &str = "check that the approver can reach the node's proof port (firewalls, NetworkPolicy egress, security groups) and that the node's agent runs its proof listener";

/// Check 15's report and what the controller should do about it.
pub(crate) struct OwnershipCheck {
    pub(crate) report: CheckReport,
    /// SANs to probe (again): no probe yet, or the latest one did not prove them.
    pub(crate) probe: Vec<IpAddr>,
    /// SANs that pass unproven because their mode is `preferred`.
    pub(crate) unproven_allowed: Vec<IpAddr>,
}

impl Ctx<'_> {
    /// Check 15. `eligible` is false when the verdict already denies or check 9 did not
    /// pass: then no address is probed and the check is not evaluated.
    pub(crate) fn ip_sans_owned(&self, ownership: Ownership<'_>, eligible: bool) -> OwnershipCheck {
        let name = CheckName::IpSansOwned;
        let ips = &self.req.sans().ips;
        let nothing = |report| OwnershipCheck {
            report,
            probe: Vec::new(),
            unproven_allowed: Vec::new(),
        };
        if ips.is_empty() {
            return nothing(CheckReport::passed(name, "no IP SANs requested"));
        }
        let (Some(node), Some(a), true) = (self.node, &self.facts.attestation, eligible) else {
            return nothing(CheckReport::skipped(
                name,
                "not evaluated: addresses are probed only once check 9 passes and nothing denies the CSR",
            ));
        };
        if !self.facts.fresh {
            return nothing(CheckReport::skipped(
                name,
                "not evaluated: the node's attestation is not fresh",
            ));
        }
        let listener = match a.proof_port {
            Some(port) if port == ownership.port => Ok(()),
            Some(port) => Err(format!(
                "{node}'s agent listens for probes on port {port}, but the approver probes port {} (set the agents' --proof-listen and the approver's --proof-port alike)",
                ownership.port
            )),
            None => Err(format!(
                "{node}'s agent{} runs no proof listener (agents before 0.4, or --proof-listen=off)",
                a.agent_version
                    .as_deref()
                    .map(|v| format!(" (version {v})"))
                    .unwrap_or_default()
            )),
        };
        let mut not_owned = Problems::default();
        let mut unproven = Problems::default();
        let mut probing = Problems::default();
        let mut notes = Problems::default();
        let mut probe = Vec::new();
        let mut unproven_allowed = Vec::new();
        let mut proven = Vec::new();
        let mut proven_count = 0;
        for ip in ips {
            let (mode, net) = self.policy.ownership_proof.mode_for(*ip);
            let by = || match net {
                Some(net) => format!("`{mode}` for {net}"),
                None => format!("`{mode}` by default"),
            };
            if mode == ProofMode::Off {
                notes.push(|| format!("{ip} is not probed ({})", by()));
                continue;
            }
            // Every SAN not `off` is probed, whatever the node says of its listener: a node
            // cannot opt out of the network's word by reporting none. The listener only
            // decides whether a refusal is evidence (the controller's business) and how an
            // unanswered probe is explained.
            let why_unanswered = |what: String| match &listener {
                Ok(()) => what,
                Err(why) => format!("{what}; {why}"),
            };
            match ownership.lookup.proof(&self.csr.name, node, *ip) {
                None => {
                    probe.push(*ip);
                    probing.push(|| format!("{ip}: a probe is about to be sent ({})", by()));
                }
                Some(ProofState::Probing { since }) => probing.push(|| {
                    format!(
                        "{ip}: probe sent at {since}, waiting for an agent to report it ({})",
                        by()
                    )
                }),
                Some(ProofState::Proven { at, .. }) if !self.is_fresh_at(at) => {
                    probe.push(*ip);
                    probing.push(|| {
                        format!(
                            "{ip}: proven at {at}, longer ago than attestationMaxAge; probing again ({})",
                            by()
                        )
                    });
                }
                Some(ProofState::Proven { at, local }) => {
                    proven_count += 1;
                    if proven.len() < MAX_PROBLEMS_KEPT {
                        proven.push(if local == *ip {
                            format!("{ip} (at {at})")
                        } else {
                            format!("{ip} (arrived on {local}, at {at})")
                        });
                    }
                }
                Some(ProofState::ReceivedByOther {
                    node: other,
                    local,
                    at,
                }) => {
                    probe.push(*ip);
                    not_owned.push(|| {
                        format!(
                            "a probe sent to {ip} was received by {other}'s agent (on {local}, at {at}), not by {node}'s: the network delivers {ip} to {other}"
                        )
                    });
                }
                Some(ProofState::Refused { at }) => {
                    probe.push(*ip);
                    not_owned.push(|| {
                        format!(
                            "{ip} refused the probe's connection at {at} while {node}'s agent listened on every address of {node}: the network delivers {ip} to another host"
                        )
                    });
                }
                Some(ProofState::Unanswered {
                    at,
                    attempts,
                    delivered,
                    what,
                }) => {
                    probe.push(*ip);
                    let tried = why_unanswered(format!(
                        "no agent reported the probe sent to {ip} ({what}; {attempts} attempt{}, the latest at {at})",
                        if attempts == 1 { "" } else { "s" }
                    ));
                    if mode == ProofMode::Required {
                        unproven.push(|| format!("{tried}; {UNANSWERED_HINT}"));
                    } else if delivered > 0 && delivered < DELIVERED_UNREPORTED_BEFORE_PASSING {
                        probing.push(|| {
                            format!(
                                "{tried}; something at {ip} took the nonce without reporting it ({delivered} time{} in a row), so it is probed again before it may pass unproven ({})",
                                if delivered == 1 { "" } else { "s" },
                                by()
                            )
                        });
                    } else {
                        unproven_allowed.push(*ip);
                        notes.push(|| format!("{tried}; passes unproven ({})", by()));
                    }
                }
            }
        }
        let also = |detail: &mut String, more: &Problems| {
            if !more.is_empty() {
                let _ = write!(detail, "; {}", more.joined());
            }
        };
        let report = if !not_owned.is_empty() {
            let mut detail = not_owned.joined();
            also(&mut detail, &unproven);
            also(&mut detail, &probing);
            CheckReport::failed(name, Outcome::Pending, Reason::AddressNotOwned, detail)
        } else if !unproven.is_empty() {
            let mut detail = unproven.joined();
            also(&mut detail, &probing);
            CheckReport::failed(name, Outcome::Pending, Reason::OwnershipUnproven, detail)
        } else if !probing.is_empty() {
            CheckReport::failed(
                name,
                Outcome::Pending,
                Reason::AwaitingOwnershipProof,
                probing.joined(),
            )
        } else {
            let mut detail = if proven.is_empty() {
                String::new()
            } else {
                format!(
                    "{node}'s agent received the probes sent to {}",
                    Listed(&proven, proven_count)
                )
            };
            if !notes.is_empty() {
                if !detail.is_empty() {
                    detail.push_str("; ");
                }
                detail.push_str(&notes.joined());
            }
            CheckReport::passed(name, detail)
        };
        OwnershipCheck {
            report,
            probe,
            unproven_allowed,
        }
    }
}
