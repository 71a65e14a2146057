//! Check 9: every IP SAN is attested on a counted interface and allowed by the CIDR policy and the Service rule.

use super::*;

impl Ctx<'_> {
    // 9
    pub(crate) fn ip_sans(&self) -> CheckReport {
        let ips = &self.req.sans().ips;
        if ips.is_empty() {
            return CheckReport::passed(CheckName::IpSansAttested, "no IP SANs requested");
        }
        // Addresses of the cluster's Services are denied whatever the facts say
        // (core::services), as are the policy's denied networks.
        let rule = ServiceRule::new(self.services, self.nodes, self.node, self.policy);
        let mut not_allowed = Problems::default();
        let mut undecided = Problems::default();
        let mut own_service_addresses = Problems::default();
        for ip in ips {
            let judgement = rule.judge(*ip);
            if let ServiceJudgement::Denied(held) = judgement {
                not_allowed.push(|| held);
            } else if let Some(net) = self.policy.denied_network_of(*ip) {
                not_allowed.push(|| format!("{ip} is in the denied network {net}"));
            } else if !self.policy.is_allowed_address(*ip) {
                not_allowed.push(|| format!("{ip} is outside the allowed networks"));
            } else if let ServiceJudgement::Undecided(why) = judgement {
                undecided.push(|| why);
            } else if let ServiceJudgement::OwnAddress(note) = judgement {
                own_service_addresses.push(|| note);
            }
        }
        let waiting = rule.waiting();
        let attestation = match (self.node, &self.facts.attestation) {
            (Some(node), Some(a)) => Some((node, a)),
            _ => None,
        };
        let Some((node, a)) = attestation else {
            return if not_allowed.is_empty() {
                CheckReport::skipped(
                    CheckName::IpSansAttested,
                    "not evaluated: no attestation to compare the IP addresses with (none is a known Service address or outside the allowed networks)",
                )
            } else {
                CheckReport::failed(
                    CheckName::IpSansAttested,
                    Outcome::Deny,
                    Reason::AddressNotAllowed,
                    not_allowed.joined(),
                )
            };
        };
        let mut unattested = Problems::default();
        let mut found_on = Vec::with_capacity(ips.len().min(MAX_PROBLEMS_KEPT));
        for ip in ips {
            match self.interface_of(a, *ip) {
                Placement::Counted(iface) => {
                    if found_on.len() < MAX_PROBLEMS_KEPT {
                        found_on.push(format!("{ip} ({iface})"));
                    }
                }
                Placement::ExcludedOnly(iface) => {
                    unattested.push(|| format!("{ip} is only on {iface}, an excluded interface"))
                }
                Placement::NotAccepted(source) => unattested.push(|| {
                    format!("{ip} is only stated by {source} metadata, which the policy's metadataSources.ipSans does not accept")
                }),
                Placement::Absent if a.metadata.is_empty() => unattested
                    .push(|| format!("{ip} is not on any interface {node}'s agent reported")),
                Placement::Absent => unattested.push(|| {
                    let sources: Vec<&str> = a.metadata.iter().map(|m| m.source.as_str()).collect();
                    format!(
                        "{ip} is not on any interface {node}'s agent reported, nor stated by its {} metadata",
                        sources.join(", ")
                    )
                }),
            }
        }
        if !not_allowed.is_empty() {
            let mut detail = not_allowed.joined();
            if !unattested.is_empty() {
                let _ = write!(detail, "; {}", unattested.joined());
            }
            return CheckReport::failed(
                CheckName::IpSansAttested,
                Outcome::Deny,
                Reason::AddressNotAllowed,
                detail,
            );
        }
        // What the Service rule could not settle yet, for a detail.
        let unsettled = || {
            let mut parts: Vec<String> = waiting.iter().cloned().collect();
            if !undecided.is_empty() {
                parts.push(undecided.joined());
            }
            parts.join("; ")
        };
        if !unattested.is_empty() {
            let (outcome, reason) = self.facts.missing(Reason::AddressNotAttested);
            let mut detail = self.facts.explain(unattested.joined());
            if outcome == Outcome::Pending && (waiting.is_some() || !undecided.is_empty()) {
                let _ = write!(detail, "; {}", unsettled());
            }
            return CheckReport::failed(CheckName::IpSansAttested, outcome, reason, detail);
        }
        if let Some(waiting) = &waiting {
            return CheckReport::failed(
                CheckName::IpSansAttested,
                Outcome::Pending,
                Reason::AwaitingServices,
                waiting.clone(),
            );
        }
        if !undecided.is_empty() {
            return CheckReport::failed(
                CheckName::IpSansAttested,
                Outcome::Pending,
                Reason::AddressConflict,
                undecided.joined(),
            );
        }
        let mut detail = format!(
            "attested by {node}'s agent: {}",
            Listed(&found_on, ips.len())
        );
        if !own_service_addresses.is_empty() {
            let _ = write!(detail, "; {}", own_service_addresses.joined());
        }
        if let Some(note) = rule.fallback_note() {
            let _ = write!(detail, "; {note}");
        }
        match rule.not_evaluated() {
            // Never reported as passed without the Service rule.
            Some(missing) => CheckReport::skipped(
                CheckName::IpSansAttested,
                format!(
                    "not evaluated against the cluster's Services ({missing}); otherwise {detail}"
                ),
            ),
            None => CheckReport::passed(CheckName::IpSansAttested, detail),
        }
    }

    /// Where `ip` appears in an attestation: on an interface, else in a metadata source.
    pub(crate) fn interface_of<'a>(&self, a: &'a Attestation, ip: IpAddr) -> Placement<'a> {
        let mut excluded = None;
        for iface in &a.interfaces {
            if iface.addresses.iter().any(|n| canonical_ip(n.addr()) == ip) {
                if !self.policy.is_excluded_interface(&iface.name) {
                    return Placement::Counted(&iface.name);
                }
                excluded.get_or_insert(iface.name.as_str());
            }
        }
        let mut not_accepted = None;
        for (source, stated) in a.metadata_addresses() {
            if stated == ip {
                if self.policy.metadata_sources.backs_ip_sans(source) {
                    return Placement::Counted(source);
                }
                not_accepted.get_or_insert(source);
            }
        }
        match (excluded, not_accepted) {
            (Some(iface), _) => Placement::ExcludedOnly(iface),
            (None, Some(source)) => Placement::NotAccepted(source),
            (None, None) => Placement::Absent,
        }
    }
}
