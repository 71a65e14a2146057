//! What the approver keeps in its TLS Secret, as checked types: the CA, a successor CA during
//! a rotation, the previous CA until it expires, and the serving certificate. Turning the
//! Secret's data into a [`PkiState`] is the one place its contents are parsed.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;

use super::authority::{self, AuthorityError, CertInfo, KeyedCert};
use super::plan::{self, IssueReason, NextCa, Schedule, Step, Timeline};

/// Secret key of the serving certificate (the `kubernetes.io/tls` layout).
pub const TLS_CERT: &str = "tls.crt";
/// Secret key of the serving certificate's private key.
pub const TLS_KEY: &str = "tls.key";
/// Secret key of the CA that signs the serving certificate (also the ConfigMap's bundle key).
pub const CA_CERT: &str = "ca.crt";
/// Secret key of that CA's private key.
pub const CA_KEY: &str = "ca.key";
/// Secret key of the successor CA during a rotation.
pub const NEXT_CA_CERT: &str = "ca-next.crt";
/// Secret key of the successor CA's private key.
pub const NEXT_CA_KEY: &str = "ca-next.key";
/// Secret key of the time (RFC 3339) a bundle with the successor was first seen published.
pub const NEXT_CA_PUBLISHED_AT: &str = "ca-next.published-at";
/// Secret key of the previous CA, kept in the bundle until it expires.
pub const PREVIOUS_CA_CERT: &str = "ca-previous.crt";
/// ConfigMap key of the CA bundle the agents trust.
pub const BUNDLE: &str = "ca.crt";

/// Why the Secret's data is not a usable state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A key is missing.
    #[error("the Secret has no {0:?}")]
    Missing(&'static str),
    /// A value is not UTF-8 text.
    #[error("{0:?} is not text")]
    NotText(&'static str),
    /// A certificate or key is unusable.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// The publication time does not parse.
    #[error("{NEXT_CA_PUBLISHED_AT:?}: {0}")]
    Time(String),
    /// The serving certificate was not signed by the CA.
    #[error("the serving certificate was not signed by the CA in {CA_CERT:?}")]
    Unsigned,
}

/// A successor CA, generated and waiting to be promoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextCaState {
    /// The CA.
    pub ca: KeyedCert,
    /// When a bundle holding it was first seen published.
    pub published_at: Option<Timestamp>,
}

/// A CA that signed the serving certificate before the current one, still trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousCa {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// What it says.
    pub info: CertInfo,
}

/// Everything in the TLS Secret, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiState {
    /// The CA that signs the serving certificate.
    pub ca: KeyedCert,
    /// A successor during a rotation.
    pub next: Option<NextCaState>,
    /// The CA before the current one, until it expires.
    pub previous: Option<PreviousCa>,
    /// The serving certificate and key.
    pub serving: KeyedCert,
}

// === impl PkiState ===

impl PkiState {
    /// A new CA and a serving certificate for `names`.
    pub fn fresh(
        now: Timestamp,
        schedule: &Schedule,
        names: &[String],
    ) -> Result<Self, AuthorityError> {
        let ca = authority::new_ca(now, schedule.ca.validity)?;
        let serving = authority::issue_serving(&ca, names, now, schedule.serving.validity)?;
        Ok(Self {
            ca,
            next: None,
            previous: None,
            serving,
        })
    }

    /// Parses the Secret's data.
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Result<Self, StateError> {
        let text = |key: &'static str| -> Result<Option<&str>, StateError> {
            data.get(key)
                .map(|v| std::str::from_utf8(&v.0).map_err(|_| StateError::NotText(key)))
                .transpose()
        };
        let required = |key: &'static str| text(key)?.ok_or(StateError::Missing(key));
        let ca = authority::read_ca(required(CA_CERT)?, required(CA_KEY)?, CA_CERT)?;
        let serving = authority::read_leaf(required(TLS_CERT)?, required(TLS_KEY)?, TLS_CERT)?;
        if !authority::signed_by(&serving.info, &ca.info) {
            return Err(StateError::Unsigned);
        }
        let next = match (text(NEXT_CA_CERT)?, text(NEXT_CA_KEY)?) {
            (Some(cert), Some(key)) => Some(NextCaState {
                ca: authority::read_ca(cert, key, NEXT_CA_CERT)?,
                published_at: text(NEXT_CA_PUBLISHED_AT)?
                    .map(|t| {
                        t.trim()
                            .parse::<Timestamp>()
                            .map_err(|e| StateError::Time(e.to_string()))
                    })
                    .transpose()?,
            }),
            (Some(_), None) => return Err(StateError::Missing(NEXT_CA_KEY)),
            (None, Some(_)) => return Err(StateError::Missing(NEXT_CA_CERT)),
            (None, None) => None,
        };
        let previous = text(PREVIOUS_CA_CERT)?
            .map(|pem| -> Result<_, StateError> {
                Ok(PreviousCa {
                    cert_pem: pem.to_owned(),
                    info: authority::read_cert(pem, PREVIOUS_CA_CERT)?,
                })
            })
            .transpose()?;
        Ok(Self {
            ca,
            next,
            previous,
            serving,
        })
    }

    /// The Secret's data.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
        };
        put(TLS_CERT, &self.serving.cert_pem);
        put(TLS_KEY, &self.serving.key_pem);
        put(CA_CERT, &self.ca.cert_pem);
        put(CA_KEY, &self.ca.key_pem);
        if let Some(next) = &self.next {
            put(NEXT_CA_CERT, &next.ca.cert_pem);
            put(NEXT_CA_KEY, &next.ca.key_pem);
            if let Some(at) = next.published_at {
                put(NEXT_CA_PUBLISHED_AT, &at.to_string());
            }
        }
        if let Some(previous) = &self.previous {
            put(PREVIOUS_CA_CERT, &previous.cert_pem);
        }
        data
    }

    /// The CA bundle agents must trust: the current CA, the successor, the previous one.
    pub fn bundle(&self) -> String {
        let mut bundle = String::new();
        let certs = std::iter::once(self.ca.cert_pem.as_str())
            .chain(self.next.as_ref().map(|n| n.ca.cert_pem.as_str()))
            .chain(self.previous.as_ref().map(|p| p.cert_pem.as_str()));
        for pem in certs {
            bundle.push_str(pem.trim_end());
            bundle.push('\n');
        }
        bundle
    }

    /// What the plan sees, for a serving certificate that should name `names`.
    pub fn timeline(&self, names: &[String]) -> Timeline {
        Timeline {
            ca_not_after: self.ca.info.not_after,
            next: self.next.as_ref().map(|n| NextCa {
                published_at: n.published_at,
            }),
            previous_not_after: self.previous.as_ref().map(|p| p.info.not_after),
            serving_not_after: self.serving.info.not_after,
            serving_matches: self.serving.info.dns_names == names
                && authority::signed_by(&self.serving.info, &self.ca.info),
        }
    }

    /// The state after the steps due at `now`, and those steps; `None` when nothing is due.
    pub fn advance(
        &self,
        now: Timestamp,
        schedule: &Schedule,
        names: &[String],
    ) -> Result<Option<(Self, Vec<Step>)>, AuthorityError> {
        let steps = plan::plan(&self.timeline(names), now, schedule);
        if steps.is_empty() {
            return Ok(None);
        }
        let mut next = self.clone();
        for step in &steps {
            match step {
                Step::ReplaceExpiredCa => {
                    next.ca = authority::new_ca(now, schedule.ca.validity)?;
                    next.next = None;
                    next.previous = None;
                }
                Step::DropPreviousCa => next.previous = None,
                Step::StartCaRotation => {
                    next.next = Some(NextCaState {
                        ca: authority::new_ca(now, schedule.ca.validity)?,
                        published_at: None,
                    });
                }
                Step::PromoteNextCa => {
                    if let Some(successor) = next.next.take() {
                        let old = std::mem::replace(&mut next.ca, successor.ca);
                        next.previous = Some(PreviousCa {
                            cert_pem: old.cert_pem,
                            info: old.info,
                        });
                    }
                }
                Step::IssueServing(_) => {
                    next.serving =
                        authority::issue_serving(&next.ca, names, now, schedule.serving.validity)?;
                }
            }
        }
        Ok(Some((next, steps)))
    }

    /// Whether a successor CA waits for its publication to be recorded.
    pub fn awaits_publication(&self) -> bool {
        self.next.as_ref().is_some_and(|n| n.published_at.is_none())
    }

    /// Records that a bundle holding the successor has been published at `now`.
    pub fn mark_published(&mut self, now: Timestamp) {
        if let Some(next) = &mut self.next
            && next.published_at.is_none()
        {
            next.published_at = Some(now);
        }
    }

    /// Why a serving certificate was issued, for logs: the first issuing step.
    pub fn issue_reason(steps: &[Step]) -> Option<IssueReason> {
        steps.iter().find_map(|s| match s {
            Step::IssueServing(reason) => Some(*reason),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pki::plan::Lifetime;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86400);

    fn schedule() -> Schedule {
        Schedule {
            ca: Lifetime {
                validity: 10 * DAY,
                renew_before: 5 * DAY,
            },
            serving: Lifetime {
                validity: 2 * DAY,
                renew_before: DAY,
            },
            propagation: HOUR,
        }
    }

    fn names() -> Vec<String> {
        ["svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"]
            .map(str::to_owned)
            .to_vec()
    }

    fn t0() -> Timestamp {
        "2026-03-01T00:00:00Z".parse().expect("time")
    }

    fn at(d: Duration) -> Timestamp {
        t0().checked_add(jiff::SignedDuration::try_from(d).expect("duration"))
            .expect("time")
    }

    fn pem_count(bundle: &str) -> usize {
        bundle.matches("-----BEGIN CERTIFICATE-----").count()
    }

    #[test]
    fn the_secret_data_round_trips() {
        let state = PkiState::fresh(t0(), &schedule(), &names()).expect("fresh");
        assert_eq!(state.serving.info.dns_names, names());
        assert!(authority::signed_by(&state.serving.info, &state.ca.info));
        assert_eq!(state.serving.info.not_after, at(2 * DAY));
        assert_eq!(
            state.serving.info.not_before,
            t0().checked_sub(jiff::SignedDuration::from_mins(5))
                .expect("time")
        );
        let data = state.to_data();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            [CA_CERT, CA_KEY, TLS_CERT, TLS_KEY]
        );
        assert_eq!(PkiState::from_data(&data).expect("parse"), state);
        assert_eq!(pem_count(&state.bundle()), 1);
        assert!(
            state
                .advance(t0(), &schedule(), &names())
                .expect("advance")
                .is_none()
        );
    }

    #[test]
    fn a_ca_rotation_overlaps_old_and_new_in_the_bundle() {
        let s = schedule();
        let fresh = PkiState::fresh(t0(), &s, &names()).expect("fresh");
        let old_ca = fresh.ca.clone();

        // Five days before the CA expires: a successor, published next to the current CA;
        // the serving certificate (renewed on the way) is still signed by the current CA.
        let (rotating, steps) = fresh
            .advance(at(5 * DAY), &s, &names())
            .expect("advance")
            .expect("due");
        assert!(steps.contains(&Step::StartCaRotation), "{steps:?}");
        assert_eq!(rotating.ca, old_ca);
        assert!(authority::signed_by(&rotating.serving.info, &old_ca.info));
        assert_eq!(pem_count(&rotating.bundle()), 2);
        assert!(rotating.awaits_publication());
        let round_trip = PkiState::from_data(&rotating.to_data()).expect("parse");
        assert_eq!(round_trip, rotating);

        // Nothing happens until the publication is recorded, however long that takes.
        assert!(
            rotating
                .advance(at(5 * DAY + 2 * HOUR), &s, &names())
                .expect("advance")
                .is_none()
        );
        let mut published = rotating.clone();
        published.mark_published(at(5 * DAY));
        assert!(!published.awaits_publication());
        let round_trip = PkiState::from_data(&published.to_data()).expect("parse");
        assert_eq!(round_trip, published);
        assert!(
            published
                .advance(at(5 * DAY + HOUR / 2), &s, &names())
                .expect("advance")
                .is_none()
        );

        // After the propagation delay the successor signs; the old CA stays trusted.
        let (promoted, steps) = published
            .advance(at(5 * DAY + HOUR), &s, &names())
            .expect("advance")
            .expect("due");
        assert_eq!(
            steps,
            [
                Step::PromoteNextCa,
                Step::IssueServing(IssueReason::CaChanged)
            ]
        );
        let new_ca = rotating.next.as_ref().map(|n| n.ca.clone()).expect("next");
        assert_eq!(promoted.ca, new_ca);
        assert!(authority::signed_by(&promoted.serving.info, &new_ca.info));
        assert!(!authority::signed_by(&promoted.serving.info, &old_ca.info));
        assert_eq!(
            promoted.previous.as_ref().map(|p| &p.info),
            Some(&old_ca.info)
        );
        let bundle = promoted.bundle();
        assert_eq!(pem_count(&bundle), 2);
        assert!(bundle.starts_with(new_ca.cert_pem.trim_end()));
        assert!(bundle.contains(old_ca.cert_pem.trim_end()));
        assert_eq!(
            PkiState::from_data(&promoted.to_data()).expect("parse"),
            promoted
        );

        // Once the old CA expires it leaves the bundle.
        let (dropped, steps) = promoted
            .advance(at(10 * DAY), &s, &names())
            .expect("advance")
            .expect("due");
        assert!(steps.contains(&Step::DropPreviousCa), "{steps:?}");
        assert!(dropped.previous.is_none());
        assert!(!dropped.bundle().contains(old_ca.cert_pem.trim_end()));
        assert!(dropped.bundle().starts_with(new_ca.cert_pem.trim_end()));
    }

    #[test]
    fn a_serving_certificate_never_outlives_its_ca() {
        let s = Schedule {
            ca: Lifetime {
                validity: 3 * DAY,
                renew_before: DAY,
            },
            ..schedule()
        };
        let state = PkiState::fresh(t0(), &s, &names()).expect("fresh");
        // Issued two days in: the 2-day validity is cut at the CA's end.
        let (renewed, _) = state
            .advance(at(2 * DAY - HOUR), &s, &names())
            .expect("advance")
            .expect("due");
        assert_eq!(renewed.serving.info.not_after, state.ca.info.not_after);
    }

    #[test]
    fn other_names_get_a_new_serving_certificate() {
        let state = PkiState::fresh(t0(), &schedule(), &names()).expect("fresh");
        let other: Vec<String> = vec!["approver".into(), "approver.ops".into()];
        let (renamed, steps) = state
            .advance(t0(), &schedule(), &other)
            .expect("advance")
            .expect("due");
        assert_eq!(steps, [Step::IssueServing(IssueReason::Mismatch)]);
        assert_eq!(renamed.serving.info.dns_names, other);
        assert_eq!(renamed.ca, state.ca);
    }

    #[test]
    fn unusable_data_is_refused_with_the_reason() {
        let state = PkiState::fresh(t0(), &schedule(), &names()).expect("fresh");
        let stranger = PkiState::fresh(t0(), &schedule(), &names()).expect("fresh");
        let with = |edit: &dyn Fn(&mut BTreeMap<String, ByteString>)| {
            let mut data = state.to_data();
            edit(&mut data);
            PkiState::from_data(&data)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let put = |data: &mut BTreeMap<String, ByteString>, key: &str, value: &str| {
            data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
        };
        assert!(
            with(&|d| {
                d.remove(TLS_KEY);
            })
            .is_err_and(|e| e.contains("tls.key"))
        );
        assert!(
            with(&|d| put(d, CA_CERT, &stranger.ca.cert_pem))
                .is_err_and(|e| e.contains("does not match"))
        );
        assert!(
            with(&|d| {
                put(d, CA_CERT, &stranger.ca.cert_pem);
                put(d, CA_KEY, &stranger.ca.key_pem);
            })
            .is_err_and(|e| e.contains("not signed by the CA"))
        );
        assert!(with(&|d| put(d, TLS_CERT, "garbage")).is_err());
        assert!(
            with(&|d| put(d, NEXT_CA_CERT, &stranger.ca.cert_pem))
                .is_err_and(|e| e.contains("ca-next.key"))
        );
        assert!(with(&|d| put(d, CA_CERT, &state.serving.cert_pem)).is_err());
        assert!(
            with(&|d| {
                put(d, CA_CERT, &state.serving.cert_pem);
                put(d, CA_KEY, &state.serving.key_pem);
            })
            .is_err_and(|e| e.contains("not a CA certificate"))
        );
        assert!(
            with(&|d| {
                d.insert(CA_KEY.to_owned(), ByteString(vec![0xff, 0xfe]));
            })
            .is_err_and(|e| e.contains("not text"))
        );
    }
}
