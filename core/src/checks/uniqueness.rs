//! Check 11: no other node attests or lists a SAN, in any reading.

use super::*;

impl Ctx<'_> {
    // 11, attestations
    pub(crate) fn unique_among_attestations(&self) -> CheckReport {
        let node = match self.need_node(CheckName::UniqueAmongAttestations) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let sans = self.req.sans();
        let mut conflicts = Problems::default();
        for ip in &sans.ips {
            self.attestations.visit_claimants_of_ip(*ip, &mut |other| {
                // Any interface counts here: an address another node holds on
                // an excluded device (a Service IP on kube-ipvs0) is still not
                // this node's to claim.
                if other.node_name != node && self.is_fresh(other) {
                    match self.interface_of(other, *ip) {
                        Placement::Counted(iface) => conflicts.push(|| {
                            format!("{ip} is also attested by {} ({iface})", other.node_name)
                        }),
                        Placement::ExcludedOnly(iface) => conflicts.push(|| {
                            format!(
                                "{ip} is also attested by {} ({iface}, an excluded interface)",
                                other.node_name
                            )
                        }),
                        Placement::NotAccepted(source) => conflicts.push(|| {
                            format!(
                                "{ip} is also stated by {}'s {source} metadata",
                                other.node_name
                            )
                        }),
                        Placement::Absent => {}
                    }
                }
                ControlFlow::Continue(())
            });
        }
        for name in &sans.dns {
            for form in self.policy.readings(name) {
                self.attestations
                    .visit_claimants_of_name(form, &mut |other| {
                        if other.node_name != node && self.is_fresh(other) {
                            conflicts.push(|| {
                                if other.metadata_sources_naming(form).next().is_some() {
                                    format!(
                                        "{name} is a name {}'s metadata states",
                                        other.node_name
                                    )
                                } else {
                                    format!(
                                        "{name} is the node name or hostname of {}",
                                        other.node_name
                                    )
                                }
                            });
                        }
                        ControlFlow::Continue(())
                    });
            }
        }
        if conflicts.is_empty() {
            CheckReport::passed(
                CheckName::UniqueAmongAttestations,
                "no other node's fresh attestation reports any of these names or addresses",
            )
        } else {
            CheckReport::failed(
                CheckName::UniqueAmongAttestations,
                Outcome::Pending,
                Reason::AddressConflict,
                conflicts.joined(),
            )
        }
    }

    // 11, Node objects
    pub(crate) fn unique_among_nodes(&self) -> CheckReport {
        let Some(nodes) = self.nodes else {
            return CheckReport::skipped(
                CheckName::UniqueAmongNodes,
                "not evaluated: Node objects not given",
            );
        };
        let node = match self.need_node(CheckName::UniqueAmongNodes) {
            Ok(n) => n,
            Err(skipped) => return skipped,
        };
        let sans = self.req.sans();
        let mut conflicts = Problems::default();
        for ip in &sans.ips {
            nodes.visit_nodes_listing(&AddressKey::Ip(*ip), &mut |other| {
                if other != node {
                    conflicts.push(|| format!("{ip} is in Node {other}'s status.addresses"));
                }
                ControlFlow::Continue(())
            });
        }
        for name in &sans.dns {
            for form in self.policy.readings(name) {
                nodes.visit_nodes_listing(&AddressKey::Name(form.to_owned()), &mut |other| {
                    if other != node {
                        conflicts
                            .push(|| format!("{name} is the name or an address of Node {other}"));
                    }
                    ControlFlow::Continue(())
                });
            }
        }
        if conflicts.is_empty() {
            CheckReport::passed(
                CheckName::UniqueAmongNodes,
                "no other Node lists any of these names or addresses",
            )
        } else {
            CheckReport::failed(
                CheckName::UniqueAmongNodes,
                Outcome::Pending,
                Reason::AddressConflict,
                conflicts.joined(),
            )
        }
    }
}
