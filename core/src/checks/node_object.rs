//! Check 12: the Node exists and its machine-id and boot-id match.

use super::*;

impl Ctx<'_> {
    // 12
    pub(crate) fn node_object(&self) -> CheckReport {
        let Some(nodes) = self.nodes else {
            return CheckReport::skipped(
                CheckName::NodeObject,
                "not evaluated: Node objects not given",
            );
        };
        let node = match self.need_node(CheckName::NodeObject) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let Some(record) = nodes.node(node) else {
            return CheckReport::failed(
                CheckName::NodeObject,
                Outcome::Pending,
                Reason::NodeMissing,
                format!("there is no Node named {node}"),
            );
        };
        let mut compared = Vec::with_capacity(2);
        let mut mismatches = Problems::default();
        if let Some(a) = self.facts.attestation.as_deref() {
            for c in id_comparisons(a, &record) {
                if c.matches {
                    compared.push(c.what);
                } else {
                    mismatches.push(|| {
                        format!(
                            "the agent's {} {} differs from Node {node}'s status.nodeInfo.{} {}",
                            c.what,
                            quoted(&c.ours),
                            c.field,
                            quoted(&c.theirs)
                        )
                    });
                }
            }
        }
        if !mismatches.is_empty() {
            return CheckReport::failed(
                CheckName::NodeObject,
                Outcome::Pending,
                Reason::NodeMismatch,
                mismatches.joined(),
            );
        }
        let ids = if compared.is_empty() {
            "no machine-id or boot-id known to both sides".to_owned()
        } else {
            format!("{} match", compared.join(" and "))
        };
        CheckReport::passed(CheckName::NodeObject, format!("Node {node} exists; {ids}"))
    }
}
