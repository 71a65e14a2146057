//! Check 14: the SubjectAccessReview's answer — may the requestor `create`
//! `certificatesigningrequests/selfnodeserver`? An input of the decision, made by the
//! controller once every other check passes.

use super::*;

/// 14: the SubjectAccessReview's answer.
pub(crate) fn authorization(review: &AccessReview) -> CheckReport {
    match review {
        AccessReview::NotMade => CheckReport::skipped(
            CheckName::Authorization,
            "not evaluated: the SubjectAccessReview is made only once every other check passes",
        ),
        AccessReview::Allowed(detail) => {
            CheckReport::passed(CheckName::Authorization, detail.clone())
        }
        AccessReview::Refused(detail) => CheckReport::failed(
            CheckName::Authorization,
            Outcome::Pending,
            Reason::SubjectAccessDenied,
            detail.clone(),
        ),
    }
}
