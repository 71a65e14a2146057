//! What to do with a verdict, as a pure function: verdict × flood valves × settings → the
//! write to make (approve or deny), or the state to explain, and the challenge to send.
//! Acting on the plan is `act`'s; nothing here touches the API server.

use rubber_stamp_core::{Decision, Verdict};

use super::explain::{self, Explanation, Held};

/// What a decision comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Write this decision (approve or deny) to the CSR's `/approval` subresource.
    Write(Decision),
    /// Leave the CSR undecided and explain why (once per state).
    Explain(Explanation),
    /// Not ours: nothing to do.
    Nothing,
}

/// The plan for one CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The write or the explanation.
    pub(crate) step: Step,
    /// The node whose agent to challenge for a fresh report: some SAN waits on facts that
    /// cannot decide it yet (they predate the CSR, say), and a fresh report turns it into a
    /// decision instead of a wait for the next heartbeat — even when another check (a
    /// conflict) also holds the CSR.
    pub(crate) challenge: Option<String>,
}

/// Plans what to do with `verdict`. `held` is the flood valve that holds approvals of this
/// CSR's requestor back, if any (only asked for approvable CSRs).
pub(crate) fn plan(verdict: &Verdict, held: Option<Held<'_>>, dry_run: bool) -> Plan {
    let step = match verdict.decision() {
        Decision::Approve if held.is_none() && !dry_run => Step::Write(Decision::Approve),
        Decision::Deny if !dry_run => Step::Write(Decision::Deny),
        Decision::Ignore => Step::Nothing,
        Decision::Approve => Step::Explain(explain::explain(verdict, held, dry_run)),
        Decision::Deny | Decision::Pending => {
            Step::Explain(explain::explain(verdict, None, dry_run))
        }
    };
    let challenge = (verdict.decision() == Decision::Pending && verdict.waits_on_predating_facts())
        .then(|| verdict.node().map(str::to_owned))
        .flatten();
    Plan { step, challenge }
}

#[cfg(test)]
mod tests {
    use rubber_stamp_core::{CheckName, CheckReport, DenyMode, Outcome as O, Reason};

    use super::super::explain::{NodeHold, Outcome, reasons};
    use super::super::valve::ValveState;
    use super::*;

    fn mk_verdict(failures: &[(CheckName, O, Reason)]) -> Verdict {
        let mut checks = vec![CheckReport::passed(CheckName::Scope, "ok")];
        for (name, outcome, reason) in failures {
            checks.push(CheckReport::failed(*name, *outcome, *reason, "why"));
        }
        Verdict::new(Some("worker-1".to_owned()), checks, None, DenyMode::Always)
    }

    fn approvable() -> Verdict {
        mk_verdict(&[])
    }

    fn explained(plan: &Plan) -> &Explanation {
        match &plan.step {
            Step::Explain(e) => e,
            other => panic!("expected an explanation, got {other:?}"),
        }
    }

    #[test]
    fn an_approvable_csr_is_approved_unless_held_or_dry() {
        assert_eq!(
            plan(&approvable(), None, false),
            Plan {
                step: Step::Write(Decision::Approve),
                challenge: None
            }
        );
        let dry = plan(&approvable(), None, true);
        assert_eq!(explained(&dry).reason, reasons::WOULD_APPROVE);
        let hold = NodeHold {
            requestor: "system:node:worker-1".to_owned(),
            node: Some("worker-1".to_owned()),
            pending: 11,
            bound: 10,
        };
        let held = plan(&approvable(), Some(Held::Node(&hold)), false);
        assert_eq!(explained(&held).reason, reasons::APPROVAL_HELD);
        assert_eq!(explained(&held).outcome, Outcome::Held);
        let valve = ValveState {
            closed: true,
            pending: 500,
            bound: 110,
            change: None,
        };
        let held = plan(&approvable(), Some(Held::Valve(&valve)), false);
        assert_eq!(explained(&held).reason, reasons::APPROVAL_HELD);
    }

    #[test]
    fn a_denial_is_written_unless_dry() {
        let denied = mk_verdict(&[(
            CheckName::IpSansAttested,
            O::Deny,
            Reason::AddressNotAttested,
        )]);
        assert_eq!(plan(&denied, None, false).step, Step::Write(Decision::Deny));
        let dry = plan(&denied, None, true);
        assert_eq!(explained(&dry).reason, reasons::WOULD_DENY);
    }

    #[test]
    fn a_wait_on_facts_that_cannot_decide_challenges_the_agent_even_next_to_a_conflict() {
        let waits = mk_verdict(&[
            (
                CheckName::IpSansAttested,
                O::Pending,
                Reason::UnattestedAddress,
            ),
            (
                CheckName::UniqueAmongAttestations,
                O::Pending,
                Reason::AddressConflict,
            ),
        ]);
        let p = plan(&waits, None, false);
        assert_eq!(p.challenge.as_deref(), Some("worker-1"));
        assert_eq!(explained(&p).reason, "AddressConflict");
        let conflict_only = mk_verdict(&[(
            CheckName::UniqueAmongAttestations,
            O::Pending,
            Reason::AddressConflict,
        )]);
        assert_eq!(plan(&conflict_only, None, false).challenge, None);
    }

    #[test]
    fn a_csr_that_is_not_ours_needs_nothing() {
        let ignored = mk_verdict(&[(CheckName::Scope, O::Ignore, Reason::OutOfScope)]);
        assert_eq!(
            plan(&ignored, None, false),
            Plan {
                step: Step::Nothing,
                challenge: None
            }
        );
    }
}
