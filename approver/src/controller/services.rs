//! The cluster's Services and ServiceCIDRs in the core's terms: two watches folded into one
//! indexed [`ServiceSet`], updated in place, and triggers for the pending CSRs whose IP
//! SANs a change concerns.
//!
//! ServiceCIDRs are read as `networking.k8s.io/v1` (GA in Kubernetes 1.33). Where the API
//! server does not serve them (404: Kubernetes before 1.33, or 1.31–1.32 with the beta API
//! off, as it is by default), the set records the ranges as [`Listing::Unserved`], logs it
//! once, and the policy's `deniedCidrs` and the Services' own addresses stand in for the
//! ranges. The watch keeps retrying with backoff, so a cluster upgraded underneath is picked
//! up. Any other error (403 included) keeps decisions on IP SANs waiting: a denial of list
//! is a misconfiguration, not evidence that there are no ranges.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio_util::sync::CancellationToken;

use super::triggers::Triggers;
use crate::k8s;
use rubber_stamp_core::{Listing, ServiceLookup as _, ServiceRange, ServiceRecord, ServiceSet};

/// Every Service and ServiceCIDR the watches show.
#[derive(Debug)]
pub(crate) struct ServiceIndex {
    set: RwLock<ServiceSet>,
}

/// A consistent read view; a read lock, so never held across an `.await`. Lock order:
/// attestations, then Nodes, then this.
pub(crate) type ServiceView<'a> = RwLockReadGuard<'a, ServiceSet>;

impl Default for ServiceIndex {
    fn default() -> Self {
        let mut set = ServiceSet::new();
        set.set_services_listing(Listing::Waiting);
        set.set_ranges_listing(Listing::Waiting);
        Self {
            set: RwLock::new(set),
        }
    }
}

// === impl ServiceIndex ===

impl ServiceIndex {
    /// The Services and ranges, for one decision.
    pub(crate) fn read(&self) -> ServiceView<'_> {
        self.set.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ServiceSet> {
        self.set.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces every Service (after a list); returns the addresses whose holders changed.
    fn replace_services(&self, new: Vec<ServiceRecord>) -> HashSet<IpAddr> {
        let mut set = self.write();
        let mut changed = HashSet::new();
        let mut seen = HashSet::with_capacity(new.len());
        for record in new {
            seen.insert((record.namespace.clone(), record.name.clone()));
            changed.extend(upsert(&mut set, record));
        }
        let gone: Vec<(String, String)> = set
            .services()
            .filter(|s| !seen.contains(&(s.namespace.clone(), s.name.clone())))
            .map(|s| (s.namespace.clone(), s.name.clone()))
            .collect();
        for (namespace, name) in gone {
            if let Some(old) = set.remove(&namespace, &name) {
                changed.extend(old.ips());
            }
        }
        set.set_services_listing(Listing::Listed);
        changed
    }

    /// Inserts or updates one Service; returns the addresses whose holders changed.
    fn upsert(&self, record: ServiceRecord) -> HashSet<IpAddr> {
        upsert(&mut self.write(), record)
    }

    /// Removes one Service; returns its addresses.
    fn remove(&self, namespace: &str, name: &str) -> HashSet<IpAddr> {
        self.write()
            .remove(namespace, name)
            .map(|old| old.ips().into_iter().collect())
            .unwrap_or_default()
    }

    /// Replaces the ranges (after a list, or with none when unserved); true when they
    /// or their listing state changed.
    fn replace_ranges(&self, ranges: Vec<ServiceRange>, listing: Listing) -> bool {
        let mut set = self.write();
        let old: Vec<ServiceRange> = set.ranges().map(|r| (**r).clone()).collect();
        let was = set.ranges_listing();
        set.clear_ranges();
        for r in ranges {
            set.insert_range(Arc::new(r));
        }
        set.set_ranges_listing(listing);
        let new: Vec<ServiceRange> = set.ranges().map(|r| (**r).clone()).collect();
        was != listing || old != new
    }

    fn upsert_range(&self, range: ServiceRange) -> bool {
        let mut set = self.write();
        if set.ranges().any(|r| **r == range) {
            return false;
        }
        set.insert_range(Arc::new(range));
        true
    }

    fn remove_range(&self, name: &str) -> bool {
        self.write().remove_range(name).is_some()
    }

    /// How far the Services and ranges are listed.
    pub(crate) fn listings(&self) -> (Listing, Listing) {
        let set = self.read();
        (set.services_listing(), set.ranges_listing())
    }
}

fn upsert(set: &mut ServiceSet, record: ServiceRecord) -> HashSet<IpAddr> {
    match set.service(&record.namespace, &record.name) {
        Some(old) if **old == record => HashSet::new(),
        Some(old) => {
            // Any address whose field changed, appeared or went away.
            let old_addresses: HashSet<_> = old.addresses.iter().copied().collect();
            let new_addresses: HashSet<_> = record.addresses.iter().copied().collect();
            let changed = old_addresses
                .symmetric_difference(&new_addresses)
                .map(|a| a.ip)
                .collect();
            set.insert(Arc::new(record));
            changed
        }
        None => {
            let changed = record.ips().into_iter().collect();
            set.insert(Arc::new(record));
            changed
        }
    }
}

/// Follows the Services until `stop`: keeps `index` current and re-decides the pending
/// CSRs asking for an address whose holders changed. The first complete list re-decides
/// every CSR (those with IP SANs waited for it).
pub(crate) async fn watch_services(
    api: Api<Service>,
    index: Arc<ServiceIndex>,
    triggers: Triggers,
    stop: CancellationToken,
) {
    let config = watcher::Config::default();
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut listing: Option<Vec<ServiceRecord>> = None;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let changed = match event {
            Err(error) => {
                tracing::warn!(%error, "watching Services");
                continue;
            }
            Ok(watcher::Event::Init) => {
                listing = Some(Vec::new());
                continue;
            }
            Ok(watcher::Event::InitApply(service)) => {
                listing
                    .get_or_insert_with(Vec::new)
                    .push(k8s::service_record(&service));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let first = index.listings().0 != Listing::Listed;
                let changed = index.replace_services(listing.take().unwrap_or_default());
                if first {
                    tracing::info!(
                        services = index.read().len(),
                        "Services listed; deciding on IP SANs"
                    );
                    triggers.everything();
                    continue;
                }
                changed
            }
            Ok(watcher::Event::Apply(service)) => index.upsert(k8s::service_record(&service)),
            Ok(watcher::Event::Delete(service)) => index.remove(
                service.metadata.namespace.as_deref().unwrap_or_default(),
                service.metadata.name.as_deref().unwrap_or_default(),
            ),
        };
        if changed.is_empty() {
            continue;
        }
        let sent = triggers.csrs_asking_for(&changed);
        tokio::select! {
            () = stop.cancelled() => return,
            () = sent => {}
        }
    }
}

/// True for the answer of an API server that does not serve the resource.
fn is_unserved(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
        _ => false,
    }
}

/// Follows the ServiceCIDRs until `stop` (see the module documentation for a server that
/// does not serve them); a change of the ranges re-decides the pending CSRs with IP SANs in
/// any old or new range.
pub(crate) async fn watch_service_cidrs(
    api: Api<ServiceCIDR>,
    index: Arc<ServiceIndex>,
    triggers: Triggers,
    stop: CancellationToken,
) {
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut listing: Option<Vec<ServiceRange>> = None;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let before: Vec<ServiceRange> = index.read().ranges().map(|r| (**r).clone()).collect();
        let changed = match event {
            Err(error) if is_unserved(&error) => {
                let first = index.listings().1 != Listing::Unserved;
                let changed = index.replace_ranges(Vec::new(), Listing::Unserved);
                if first {
                    tracing::warn!(
                        "the API server does not serve networking.k8s.io/v1 ServiceCIDRs (Kubernetes before 1.33): IP SANs are checked against the Services' own addresses and the policy's deniedCidrs only; list the Service range in deniedCidrs"
                    );
                    triggers.everything();
                    continue;
                }
                changed
            }
            Err(error) => {
                tracing::warn!(%error, "watching ServiceCIDRs");
                continue;
            }
            Ok(watcher::Event::Init) => {
                listing = Some(Vec::new());
                continue;
            }
            Ok(watcher::Event::InitApply(cidr)) => {
                listing
                    .get_or_insert_with(Vec::new)
                    .push(k8s::service_range(&cidr));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let was = index.listings().1;
                let changed =
                    index.replace_ranges(listing.take().unwrap_or_default(), Listing::Listed);
                if was != Listing::Listed {
                    tracing::info!(
                        service_cidrs = index.read().ranges().count(),
                        "ServiceCIDRs listed; checking IP SANs against them"
                    );
                    triggers.everything();
                    continue;
                }
                changed
            }
            Ok(watcher::Event::Apply(cidr)) => index.upsert_range(k8s::service_range(&cidr)),
            Ok(watcher::Event::Delete(cidr)) => {
                index.remove_range(cidr.metadata.name.as_deref().unwrap_or_default())
            }
        };
        if !changed {
            continue;
        }
        let after: Vec<ServiceRange> = index.read().ranges().map(|r| (**r).clone()).collect();
        let nets: Vec<ipnet::IpNet> = before
            .iter()
            .chain(&after)
            .flat_map(|r| r.cidrs.iter().copied())
            .collect();
        let sent = triggers.csrs_asking_for_any(move |ip| nets.iter().any(|n| n.contains(&ip)));
        tokio::select! {
            () = stop.cancelled() => return,
            () = sent => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubber_stamp_core::{ServiceAddress, ServiceField};

    fn record(name: &str, ips: &[(&str, ServiceField)]) -> ServiceRecord {
        ServiceRecord::new(
            "default",
            name,
            ips.iter().map(|(ip, field)| ServiceAddress {
                ip: ip.parse().expect("ip"),
                field: *field,
            }),
        )
    }

    #[test]
    fn changes_name_exactly_the_addresses_whose_holders_changed() {
        let index = ServiceIndex::default();
        assert_eq!(index.listings(), (Listing::Waiting, Listing::Waiting));
        let a = record("a", &[("10.96.0.10", ServiceField::ClusterIp)]);
        let changed = index.replace_services(vec![a.clone()]);
        assert_eq!(changed.len(), 1);
        assert_eq!(index.listings().0, Listing::Listed);
        assert!(index.upsert(a).is_empty(), "same record, nothing changed");
        // An external IP added: only it changed.
        let b = record(
            "a",
            &[
                ("10.96.0.10", ServiceField::ClusterIp),
                ("192.0.2.1", ServiceField::ExternalIp),
            ],
        );
        let changed = index.upsert(b);
        assert_eq!(changed, HashSet::from(["192.0.2.1".parse().expect("ip")]));
        // A re-list without it: both addresses went away.
        assert_eq!(index.replace_services(Vec::new()).len(), 2);
        assert!(index.remove("default", "a").is_empty());
        assert!(index.replace_ranges(Vec::new(), Listing::Unserved));
        assert!(!index.replace_ranges(Vec::new(), Listing::Unserved));
        assert_eq!(index.listings().1, Listing::Unserved);
    }
}
