//! Check 7: a fresh attestation from the node's agent.

use super::*;

impl Ctx<'_> {
    // 7
    pub(crate) fn attestation_fresh(&self) -> CheckReport {
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
}
