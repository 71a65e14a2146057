//! Check 5: usages digital signature and server auth (and key encipherment), no CA or signing.

use super::*;

/// `spec.usages` a kubelet serving request must have.
pub const USAGE_DIGITAL_SIGNATURE: &str = "digital signature";
/// `spec.usages` a kubelet serving request may have (RSA keys).
pub const USAGE_KEY_ENCIPHERMENT: &str = "key encipherment";
/// `spec.usages` a kubelet serving request must have.
pub const USAGE_SERVER_AUTH: &str = "server auth";

impl Ctx<'_> {
    // 5
    pub(crate) fn usages(&self) -> CheckReport {
        let (mut ds, mut ke, mut sa) = (false, false, false);
        let mut others = Problems::default();
        for u in &self.csr.usages {
            match u.as_str() {
                USAGE_DIGITAL_SIGNATURE => ds = true,
                USAGE_KEY_ENCIPHERMENT => ke = true,
                USAGE_SERVER_AUTH => sa = true,
                other => others.push(|| quoted(other)),
            }
        }
        let mut problems = Problems::default();
        if !others.is_empty() {
            problems.push(|| format!("usages {} are not allowed", others.joined()));
        }
        if !ds || !sa {
            problems.push(|| {
                let missing: Vec<&str> = [(!ds, USAGE_DIGITAL_SIGNATURE), (!sa, USAGE_SERVER_AUTH)]
                    .iter()
                    .filter(|(m, _)| *m)
                    .map(|(_, u)| *u)
                    .collect();
                format!("usages lack {}", missing.join(" and "))
            });
        }
        let requested = self.req.requested_usage();
        if requested.ca {
            problems.push(|| {
                "the request asks for a CA certificate (basicConstraints cA=true)".to_owned()
            });
        }
        if requested.cert_sign {
            problems
                .push(|| "the request's keyUsage asks for certificate or CRL signing".to_owned());
        }
        if !requested.other_ekus.is_empty() {
            problems.push(|| {
                format!(
                    "the request's extendedKeyUsage asks for {}",
                    Listed(&requested.other_ekus, requested.other_ekus.len())
                )
            });
        }
        if problems.is_empty() {
            let set = if ke {
                "digital signature, key encipherment, server auth"
            } else {
                "digital signature, server auth"
            };
            CheckReport::passed(CheckName::Usages, format!("usages are {set}"))
        } else {
            CheckReport::failed(
                CheckName::Usages,
                Outcome::Deny,
                Reason::UsagesInvalid,
                format!(
                    "{}; a kubelet serving certificate has exactly digital signature and server auth, optionally key encipherment",
                    problems.joined()
                ),
            )
        }
    }
}
