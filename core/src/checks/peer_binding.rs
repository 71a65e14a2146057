//! Check 10: the agent connected from one of the node's own addresses, held by no other node.

use super::*;

impl Ctx<'_> {
    // 10
    pub(crate) fn peer_binding(&self) -> CheckReport {
        if !self.policy.peer_binding {
            return CheckReport::skipped(
                CheckName::PeerBinding,
                "not evaluated: peer binding is switched off in the policy",
            );
        }
        let node = match self.need_node(CheckName::PeerBinding) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let Some(a) = &self.facts.attestation else {
            return CheckReport::skipped(
                CheckName::PeerBinding,
                "not evaluated: no attestation, so no agent connection to compare",
            );
        };
        let Some(peer) = a.peer_address.map(canonical_ip) else {
            return CheckReport::failed(
                CheckName::PeerBinding,
                Outcome::Pending,
                Reason::PeerMismatch,
                format!("the approver recorded no source address for {node}'s agent"),
            );
        };
        let iface = a
            .interfaces
            .iter()
            .find(|i| i.addresses.iter().any(|n| canonical_ip(n.addr()) == peer));
        match iface {
            None => CheckReport::failed(
                CheckName::PeerBinding,
                Outcome::Pending,
                Reason::PeerMismatch,
                format!(
                    "{node}'s agent connected from {peer}, which is not one of the addresses it reported"
                ),
            ),
            Some(_) if !self.policy.is_allowed_address(peer) => CheckReport::failed(
                CheckName::PeerBinding,
                Outcome::Pending,
                Reason::PeerMismatch,
                format!("{node}'s agent connected from {peer}, outside the allowed networks"),
            ),
            // A SAN address is check 11's to find held elsewhere; report it once.
            // A loopback source means the agent shares the approver's network
            // namespace; every node has loopback addresses, so they are not compared.
            Some(i) => match (!self.req.sans().ips.contains(&peer) && !peer.is_loopback())
                .then(|| self.other_holder_of(node, peer))
                .flatten()
            {
                Some(other) => CheckReport::failed(
                    CheckName::PeerBinding,
                    Outcome::Pending,
                    Reason::PeerMismatch,
                    format!(
                        "{node}'s agent connected from {peer}, which it reports on {} but which is also {other}",
                        i.name
                    ),
                ),
                None => CheckReport::passed(
                    CheckName::PeerBinding,
                    format!(
                        "{node}'s agent connected from {peer}, its own address on {}",
                        i.name
                    ),
                ),
            },
        }
    }

    /// Who else holds `ip`: another node's fresh attestation (any interface)
    /// or another Node's `status.addresses`. Credentials used from another
    /// cluster machine connect from an address that machine's own agent reports.
    pub(crate) fn other_holder_of(&self, node: &str, ip: IpAddr) -> Option<String> {
        let mut holder = None;
        self.attestations.visit_claimants_of_ip(ip, &mut |other| {
            if other.node_name != node && self.is_fresh(other) {
                holder = Some(format!("attested by {}", other.node_name));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if holder.is_none()
            && let Some(nodes) = self.nodes
        {
            nodes.visit_nodes_listing(&AddressKey::Ip(ip), &mut |other| {
                if other != node {
                    holder = Some(format!("in Node {other}'s status.addresses"));
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
        }
        holder
    }
}
