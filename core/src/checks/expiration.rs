//! Check 13: `expirationSeconds` within the policy's maximum.

use super::*;

impl Ctx<'_> {
    // 13
    pub(crate) fn expiration(&self) -> CheckReport {
        let max = self.policy.max_expiration_seconds;
        match self.csr.expiration_seconds {
            None => CheckReport::passed(
                CheckName::Expiration,
                format!(
                    "no expirationSeconds requested (the signer's --cluster-signing-duration applies; policy maximum {max}s)"
                ),
            ),
            Some(secs) if i64::from(secs) <= i64::from(max) => CheckReport::passed(
                CheckName::Expiration,
                format!("expirationSeconds {secs} is within the maximum of {max}"),
            ),
            Some(secs) => CheckReport::failed(
                CheckName::Expiration,
                Outcome::Deny,
                Reason::ExpirationTooLong,
                format!("expirationSeconds {secs} is more than the policy's maximum of {max}"),
            ),
        }
    }
}
