//! Check 4: the requestor is the node the subject names, in `system:nodes`.

use super::*;

impl Ctx<'_> {
    // 4
    pub(crate) fn requestor(&self) -> CheckReport {
        let node = match self.need_node(CheckName::Requestor) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let mut problems = Problems::default();
        let username = &self.csr.username;
        if username.strip_prefix(NODE_CN_PREFIX) != Some(node) {
            problems.push(|| {
                format!(
                    "created by {}, but the subject names {NODE_CN_PREFIX}{node}",
                    quoted(username)
                )
            });
        }
        if !self.csr.groups.iter().any(|g| g == NODES_GROUP) {
            problems.push(|| {
                let groups: Vec<String> = self.csr.groups.iter().map(|g| quoted(g)).collect();
                format!(
                    "the requestor's groups [{}] do not include {NODES_GROUP}",
                    Listed(&groups, groups.len())
                )
            });
        }
        if problems.is_empty() {
            CheckReport::passed(
                CheckName::Requestor,
                format!("created by {username}, a member of {NODES_GROUP}"),
            )
        } else {
            CheckReport::failed(
                CheckName::Requestor,
                Outcome::Deny,
                Reason::RequestorMismatch,
                problems.joined(),
            )
        }
    }
}
