//! Check 3: the subject is exactly `CN=system:node:<name>, O=system:nodes`.

use super::*;

impl Ctx<'_> {
    // 3
    pub(crate) fn subject(&self) -> CheckReport {
        let problems = self.req.subject_problems();
        match (problems, self.node) {
            ([], Some(node)) => CheckReport::passed(
                CheckName::Subject,
                format!("CN={NODE_CN_PREFIX}{node}, O={NODES_GROUP}"),
            ),
            _ => {
                let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
                CheckReport::failed(
                    CheckName::Subject,
                    Outcome::Deny,
                    Reason::SubjectInvalid,
                    format!(
                        "{}; it must be exactly CN=system:node:<name>, O=system:nodes",
                        text.join("; ")
                    ),
                )
            }
        }
    }
}
