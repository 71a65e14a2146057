//! Check 6: SAN kinds, count and spelling.

use super::*;

impl Ctx<'_> {
    // 6
    pub(crate) fn san_shape(&self) -> CheckReport {
        let sans = self.req.sans();
        let mut problems = Problems::default();
        if sans.total == 0 {
            problems.push(|| "the request has no DNS or IP SAN".to_owned());
        }
        if sans.total > self.policy.max_sans {
            problems.push(|| {
                format!(
                    "the request has {} SANs, more than the limit of {}",
                    sans.total, self.policy.max_sans
                )
            });
        }
        for p in &sans.problems {
            problems.push(|| p.to_string());
        }
        problems.count += sans.problem_count.saturating_sub(sans.problems.len());
        if problems.is_empty() {
            let mut detail = String::new();
            if !sans.dns.is_empty() {
                let _ = write!(detail, "DNS {}", Listed(&sans.dns, sans.dns.len()));
            }
            if !sans.ips.is_empty() {
                if !detail.is_empty() {
                    detail.push_str("; ");
                }
                let _ = write!(detail, "IP {}", Listed(&sans.ips, sans.ips.len()));
            }
            CheckReport::passed(CheckName::SanShape, detail)
        } else {
            CheckReport::failed(
                CheckName::SanShape,
                Outcome::Deny,
                Reason::SanInvalid,
                problems.joined(),
            )
        }
    }
}
