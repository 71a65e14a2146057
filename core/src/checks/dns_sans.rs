//! Check 8: every DNS SAN is the node's: its name or counting hostname, under an allowed suffix, never a denied or reserved name.

use super::*;

impl Ctx<'_> {
    // 8
    pub(crate) fn dns_sans(&self) -> CheckReport {
        let dns = &self.req.sans().dns;
        if dns.is_empty() {
            return CheckReport::passed(CheckName::DnsSansAttested, "no DNS SANs requested");
        }
        // Names of the API server and of loopback, and names in the cluster's own
        // domains, are denied whatever the facts say.
        let mut not_allowed = Problems::default();
        for name in dns {
            if let Some(why) = reserved_name(name) {
                not_allowed.push(|| format!("{name} is {why}, never a node's"));
            } else if let Some(suffix) = self.policy.denied_suffix_of(name) {
                not_allowed.push(|| {
                    format!(
                        "{name} is in the denied domain {}",
                        suffix.as_str().trim_start_matches('.')
                    )
                });
            }
        }
        let deny_not_allowed = |more: Option<String>| {
            let mut detail = not_allowed.joined();
            if let Some(more) = more {
                let _ = write!(detail, "; {more}");
            }
            CheckReport::failed(
                CheckName::DnsSansAttested,
                Outcome::Deny,
                Reason::NameNotAllowed,
                detail,
            )
        };
        let attestation = match (self.node, &self.facts.attestation) {
            (Some(node), Some(a)) => Some((node, a)),
            _ => None,
        };
        let Some((node, a)) = attestation else {
            if !not_allowed.is_empty() {
                return deny_not_allowed(None);
            }
            return match self.need_node(CheckName::DnsSansAttested) {
                Err(skipped) => skipped,
                Ok(_) => CheckReport::skipped(
                    CheckName::DnsSansAttested,
                    "not evaluated: no attestation to compare the DNS names with",
                ),
            };
        };
        // The hostname is the agent's word; the node name is the certificate's.
        let hostname_counts = !self.policy.hostname_must_match_node_name
            || hostname_matches_node(&a.hostname, node, self.policy.allowed_suffixes());
        let owns =
            |name: &str| same_name(name, node) || (hostname_counts && same_name(name, &a.hostname));
        let mut missing = Problems::default();
        // Names a metadata source states support exactly themselves (no suffix reading):
        // (name, source) for the detail.
        let mut from_metadata: Vec<(String, &str)> = Vec::new();
        let mut not_accepted: Vec<(String, &str)> = Vec::new();
        for name in dns {
            // Every reading of the name counts (with overlapping allowed suffixes there
            // are several), whatever the order of the policy's list.
            if self.policy.readings(name).any(owns) {
                continue;
            }
            let stating: Vec<&str> = a.metadata_sources_naming(name).collect();
            let accepted = stating
                .iter()
                .find(|source| self.policy.metadata_sources.backs_dns_name(source, name));
            match (accepted, stating.first()) {
                (Some(source), _) => from_metadata.push((name.clone(), source)),
                (None, Some(source)) => {
                    not_accepted.push((name.clone(), source));
                    missing.push(|| name.clone());
                }
                (None, None) => missing.push(|| name.clone()),
            }
        }
        let stated = |list: &[(String, &str)]| {
            list.iter()
                .map(|(name, source)| format!("{name} ({source} metadata)"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let with_suffix = if self.policy.allowed_dns_suffixes.is_empty() {
            String::new()
        } else {
            let suffixes: Vec<&str> = self
                .policy
                .allowed_dns_suffixes
                .iter()
                .map(|s| s.as_str())
                .collect();
            format!(
                ", with or without an allowed suffix ({})",
                suffixes.join(", ")
            )
        };
        let hostname = format!("its attested hostname {}", quoted(&a.hostname));
        let missing_detail = || {
            let names = Listed(&missing.items, missing.count);
            let is = if missing.count == 1 { "is" } else { "are" };
            let mut detail = if hostname_counts {
                format!("{names} {is} neither the node name {node} nor {hostname}{with_suffix}")
            } else {
                format!(
                    "{names} {is} not the node name {node}{with_suffix}; {hostname} does not count: it is neither the node name nor its first label, alone or followed by an allowed suffix"
                )
            };
            if !a.metadata.is_empty() {
                let sources: Vec<&str> = a.metadata.iter().map(|m| m.source.as_str()).collect();
                let _ = write!(
                    detail,
                    ", nor a name its {} metadata states that the policy accepts",
                    sources.join(", ")
                );
            }
            if !not_accepted.is_empty() {
                let _ = write!(
                    detail,
                    "; stated only by metadata the policy does not accept for it (metadataSources.dnsSans, and the cloud's instance domains or metadataSources.dnsSuffixes): {}",
                    stated(&not_accepted)
                );
            }
            detail
        };
        if !not_allowed.is_empty() {
            return deny_not_allowed((!missing.is_empty()).then(missing_detail));
        }
        if missing.is_empty() {
            let hostname = if hostname_counts {
                format!(" or {hostname}")
            } else {
                String::new()
            };
            let own: Vec<String> = dns
                .iter()
                .filter(|n| !from_metadata.iter().any(|(m, _)| m == *n))
                .cloned()
                .collect();
            let mut detail = if own.is_empty() {
                String::new()
            } else {
                format!(
                    "{} {} the node name {node}{hostname}{}",
                    Listed(&own, own.len()),
                    if own.len() == 1 { "is" } else { "are" },
                    if self.policy.allowed_dns_suffixes.is_empty() {
                        ""
                    } else {
                        " (with an allowed suffix)"
                    }
                )
            };
            if !from_metadata.is_empty() {
                if !detail.is_empty() {
                    detail.push_str("; ");
                }
                let _ = write!(
                    detail,
                    "stated by the node's metadata: {}",
                    stated(&from_metadata)
                );
            }
            return CheckReport::passed(CheckName::DnsSansAttested, detail);
        }
        let (outcome, reason) = self.facts.missing(Reason::NameNotAttested);
        CheckReport::failed(
            CheckName::DnsSansAttested,
            outcome,
            reason,
            self.facts.explain(missing_detail()),
        )
    }
}
