//! The renewal schedule, pure: given what the Secret holds and the time, which steps are
//! due. No keys, no I/O; [`super::secret`] carries the steps out.
//!
//! The CA is rotated with an overlap so no agent ever sees a certificate it cannot verify:
//!
//! 1. `renewBefore` ahead of the CA's expiry a successor CA is generated and published in
//!    the bundle next to the current one (old + new); the current CA keeps signing.
//! 2. Once the bundle holding the successor has been published for the propagation delay
//!    (the kubelet refreshes ConfigMap volumes within about a minute; agents read the
//!    bundle on every connect), the successor is promoted: it signs a new serving
//!    certificate, and the old CA stays in the bundle, as "previous", until it expires.
//! 3. The serving certificate is reissued `renewBefore` ahead of its expiry, when it was not
//!    signed by the current CA, or when the Service's names changed.
//!
//! A CA that has already expired cannot be overlapped (nothing it signed verifies any
//! more): it is replaced at once.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// How long something lives and how early it is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Validity of a new certificate.
    pub validity: Duration,
    /// Renew when less than this is left.
    pub renew_before: Duration,
}

/// The schedule's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The approver's CA.
    pub ca: Lifetime,
    /// The serving certificate.
    pub serving: Lifetime,
    /// How long a successor CA is published before it signs.
    pub propagation: Duration,
}

/// What the plan sees of the current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// End of the current CA's validity.
    pub ca_not_after: Timestamp,
    /// The successor CA, while a rotation is under way.
    pub next: Option<NextCa>,
    /// End of the previous CA's validity, while it is still in the bundle.
    pub previous_not_after: Option<Timestamp>,
    /// End of the serving certificate's validity.
    pub serving_not_after: Timestamp,
    /// Whether the serving certificate was signed by the current CA and names exactly the
    /// wanted DNS names.
    pub serving_matches: bool,
}

/// A successor CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextCa {
    /// When a bundle holding it was first seen published, if yet.
    pub published_at: Option<Timestamp>,
}

/// One step the plan asks for, in the order to carry them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The CA has expired: a new CA now, no overlap possible.
    ReplaceExpiredCa,
    /// The previous CA has expired: drop it from the bundle.
    DropPreviousCa,
    /// Generate a successor CA and publish it next to the current one.
    StartCaRotation,
    /// The successor has been published long enough: it becomes the CA.
    PromoteNextCa,
    /// Issue a new serving certificate from the (possibly new) current CA.
    IssueServing(IssueReason),
}

/// Why a serving certificate is issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// A different CA signs now.
    CaChanged,
    /// The current one was not signed by the current CA or names other DNS names.
    Mismatch,
    /// The current one is within `renewBefore` of its expiry.
    Expiring,
}

// === impl IssueReason ===

impl IssueReason {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::CaChanged => "ca_changed",
            Self::Mismatch => "mismatch",
            Self::Expiring => "expiring",
        }
    }
}

/// The steps due at `now`, in order.
pub fn plan(t: &Timeline, now: Timestamp, schedule: &Schedule) -> Vec<Step> {
    if now >= t.ca_not_after {
        return vec![
            Step::ReplaceExpiredCa,
            Step::IssueServing(IssueReason::CaChanged),
        ];
    }
    let mut steps = Vec::new();
    if t.previous_not_after.is_some_and(|end| now >= end) {
        steps.push(Step::DropPreviousCa);
    }
    match t.next {
        Some(NextCa {
            published_at: Some(published),
        }) if now >= add(published, schedule.propagation) => {
            steps.push(Step::PromoteNextCa);
            steps.push(Step::IssueServing(IssueReason::CaChanged));
            return steps;
        }
        Some(_) => {}
        None if now >= sub(t.ca_not_after, schedule.ca.renew_before) => {
            steps.push(Step::StartCaRotation);
        }
        None => {}
    }
    if !t.serving_matches {
        steps.push(Step::IssueServing(IssueReason::Mismatch));
    } else if now >= sub(t.serving_not_after, schedule.serving.renew_before)
        && serving_end(now, schedule, t.ca_not_after) > t.serving_not_after
    {
        // A certificate capped at the CA's expiry cannot be extended by reissuing it; the
        // CA rotation will replace it.
        steps.push(Step::IssueServing(IssueReason::Expiring));
    }
    steps
}

/// When a serving certificate issued at `now` would expire.
pub fn serving_end(now: Timestamp, schedule: &Schedule, ca_not_after: Timestamp) -> Timestamp {
    add(now, schedule.serving.validity).min(ca_not_after)
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn schedule() -> Schedule {
        Schedule {
            ca: Lifetime {
                validity: 1825 * DAY,
                renew_before: 365 * DAY,
            },
            serving: Lifetime {
                validity: 90 * DAY,
                renew_before: 30 * DAY,
            },
            propagation: HOUR,
        }
    }

    fn t0() -> Timestamp {
        "2026-01-01T00:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn at(d: Duration) -> Timestamp {
        add(t0(), d)
    }

    /// A fresh state at t0: CA for five years, serving for 90 days.
    fn fresh() -> Timeline {
        Timeline {
            ca_not_after: at(1825 * DAY),
            next: None,
            previous_not_after: None,
            serving_not_after: at(90 * DAY),
            serving_matches: true,
        }
    }

    #[test]
    fn a_fresh_state_needs_nothing() {
        assert_eq!(plan(&fresh(), t0(), &schedule()), vec![]);
        assert_eq!(plan(&fresh(), at(60 * DAY - HOUR), &schedule()), vec![]);
    }

    #[test]
    fn the_serving_certificate_is_renewed_before_it_expires() {
        assert_eq!(
            plan(&fresh(), at(60 * DAY), &schedule()),
            vec![Step::IssueServing(IssueReason::Expiring)]
        );
        // ...and also when the renewal was missed and it already expired.
        assert_eq!(
            plan(&fresh(), at(91 * DAY), &schedule()),
            vec![Step::IssueServing(IssueReason::Expiring)]
        );
    }

    #[test]
    fn a_mismatched_serving_certificate_is_reissued_at_once() {
        let t = Timeline {
            serving_matches: false,
            ..fresh()
        };
        assert_eq!(
            plan(&t, t0(), &schedule()),
            vec![Step::IssueServing(IssueReason::Mismatch)]
        );
    }

    #[test]
    fn the_ca_rotation_starts_renew_before_its_expiry_and_waits_for_publication() {
        let t = Timeline {
            serving_not_after: at(1700 * DAY),
            ..fresh()
        };
        assert_eq!(plan(&t, at(1460 * DAY - HOUR), &schedule()), vec![]);
        assert_eq!(
            plan(&t, at(1460 * DAY), &schedule()),
            vec![Step::StartCaRotation]
        );
        // Generated but not yet seen published: wait, however long it takes.
        let generated = Timeline {
            next: Some(NextCa { published_at: None }),
            ..t.clone()
        };
        assert_eq!(plan(&generated, at(1500 * DAY), &schedule()), vec![]);
        // Published: wait for the propagation delay, then promote and reissue.
        let published = Timeline {
            next: Some(NextCa {
                published_at: Some(at(1460 * DAY)),
            }),
            ..t
        };
        assert_eq!(
            plan(
                &published,
                at(1460 * DAY + HOUR - Duration::from_secs(1)),
                &schedule()
            ),
            vec![]
        );
        assert_eq!(
            plan(&published, at(1460 * DAY + HOUR), &schedule()),
            vec![
                Step::PromoteNextCa,
                Step::IssueServing(IssueReason::CaChanged)
            ]
        );
    }

    #[test]
    fn the_previous_ca_is_dropped_once_it_expires() {
        let t = Timeline {
            previous_not_after: Some(at(10 * DAY)),
            ..fresh()
        };
        assert_eq!(plan(&t, at(10 * DAY - HOUR), &schedule()), vec![]);
        assert_eq!(
            plan(&t, at(10 * DAY), &schedule()),
            vec![Step::DropPreviousCa]
        );
    }

    #[test]
    fn an_expired_ca_is_replaced_without_overlap() {
        let t = Timeline {
            next: Some(NextCa { published_at: None }),
            previous_not_after: Some(at(DAY)),
            ..fresh()
        };
        assert_eq!(
            plan(&t, at(1825 * DAY), &schedule()),
            vec![
                Step::ReplaceExpiredCa,
                Step::IssueServing(IssueReason::CaChanged)
            ]
        );
    }

    #[test]
    fn a_serving_certificate_capped_by_the_ca_is_not_reissued_in_a_loop() {
        // The CA ends in 20 days and its rotation is stuck unpublished: the serving
        // certificate already ends with the CA, so reissuing would not extend it.
        let t = Timeline {
            ca_not_after: at(20 * DAY),
            next: Some(NextCa { published_at: None }),
            serving_not_after: at(20 * DAY),
            ..fresh()
        };
        assert_eq!(plan(&t, t0(), &schedule()), vec![]);
        assert_eq!(serving_end(t0(), &schedule(), t.ca_not_after), at(20 * DAY));
    }
}
