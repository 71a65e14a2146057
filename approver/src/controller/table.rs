//! The controller's memory of undecided kubelet-serving CSRs: the parsed request (one per
//! CSR, parsed once), the node it names, the last explained state (for Event dedup), an
//! index node → CSR names so an attestation change triggers only that node's CSRs, an
//! index IP SAN → CSR names so a Service change triggers only the CSRs asking for its
//! addresses, and the CSRs of each requestor (`spec.username`, which the API server set)
//! for the per-node flood valve.
//!
//! Entries exist exactly for the CSRs the watch shows as kubelet-serving and undecided, so
//! memory is bounded by those CSRs; an entry is dropped when its CSR is decided (by us or
//! anyone) or deleted, or when a re-list no longer shows it. The flood valves read their
//! counts here: each requestor's pending CSRs against the per-node bound, and the total,
//! counting at most that bound per requestor, against the cluster-wide bound.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::runtime::watcher;

use super::config::DEFAULT_MAX_PENDING_CSRS_PER_NODE;
use crate::store::{Clock, SystemClock};
use rubber_stamp_core::input::FINAL_CONDITIONS;
use rubber_stamp_core::{
    KUBELET_SERVING_SIGNER, ParsedRequest, Policy, RequestError, parse_request,
};

/// What parsing a CSR's `spec.request` gave.
pub(crate) type ParseResult = Result<ParsedRequest, RequestError>;

/// A CSR's explained state: the Event reason and a fingerprint of the failing checks (their
/// names, reasons and would-deny flags, not their wording, so a detail that merely names a
/// newer timestamp is not a change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StateKey {
    pub(crate) reason: &'static str,
    pub(crate) fingerprint: u64,
}

/// What recording a state found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// The state differs from the last one recorded (or none was).
    pub(crate) changed: bool,
}

/// What the table knew about a CSR when it was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decided {
    /// When this replica first saw the CSR.
    pub(crate) first_seen: Timestamp,
    /// Whether the CSR was explained as not approvable (it waited) before.
    pub(crate) waited: bool,
}

#[derive(Debug)]
struct Entry {
    uid: String,
    /// `spec.username`: who created the CSR, as the API server authenticated it.
    requestor: String,
    generation: u64,
    first_seen: Timestamp,
    parsed: Option<Arc<ParseResult>>,
    node: Option<String>,
    state: Option<StateKey>,
    waited: bool,
    failures: u32,
}

#[derive(Debug, Default)]
struct Tables {
    by_name: HashMap<String, Entry>,
    by_node: HashMap<String, HashSet<String>>,
    /// IP SAN → CSRs asking for it (once parsed).
    by_ip: HashMap<IpAddr, HashSet<String>>,
    /// Requestor → its CSRs.
    by_requestor: HashMap<String, HashSet<String>>,
    /// The per-requestor bound of the per-node flood valve.
    per_requestor_bound: usize,
    /// Σ min(CSRs of a requestor, bound): what the cluster-wide valve counts.
    capped_total: usize,
    /// Requestors with more CSRs than the bound.
    over_bound: usize,
    /// CSRs last explained as `AddressConflict`: another node's change may resolve them.
    conflicted: HashSet<String>,
    /// Bumped at the start of every (re-)list of the watch.
    generation: u64,
    relisting: bool,
}

/// The table; cheap to share behind an `Arc`, every method takes the lock briefly and
/// never across an `.await`.
#[derive(Debug)]
pub(crate) struct CsrTable {
    inner: Mutex<Tables>,
    /// Stamps first sightings: the attestation store's clock, so that "received after
    /// the CSR was seen" compares two readings of one clock.
    clock: Arc<dyn Clock>,
}

impl Default for CsrTable {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock), DEFAULT_MAX_PENDING_CSRS_PER_NODE)
    }
}

/// True when `csr` is for the kubelet-serving signer and carries no final condition.
pub(crate) fn in_scope(csr: &CertificateSigningRequest) -> bool {
    csr.spec.signer_name == KUBELET_SERVING_SIGNER
        && !csr
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| FINAL_CONDITIONS.contains(&c.type_.as_str()))
            })
}

fn name_uid(csr: &CertificateSigningRequest) -> (&str, &str) {
    (
        csr.metadata.name.as_deref().unwrap_or_default(),
        csr.metadata.uid.as_deref().unwrap_or_default(),
    )
}

fn requestor_of(csr: &CertificateSigningRequest) -> &str {
    csr.spec.username.as_deref().unwrap_or_default()
}

// === impl CsrTable ===

impl CsrTable {
    /// An empty table stamping first sightings with `clock`, whose per-node flood valve
    /// holds a requestor above `per_requestor_bound` pending CSRs.
    pub(crate) fn new(clock: Arc<dyn Clock>, per_requestor_bound: usize) -> Self {
        Self {
            inner: Mutex::new(Tables {
                per_requestor_bound,
                ..Tables::default()
            }),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows one event of the CSR watch.
    pub(crate) fn apply_event(&self, event: &watcher::Event<CertificateSigningRequest>) {
        match event {
            watcher::Event::Init => {
                let mut t = self.lock();
                t.generation += 1;
                t.relisting = true;
            }
            watcher::Event::InitApply(csr) | watcher::Event::Apply(csr) => self.observe(csr),
            watcher::Event::InitDone => {
                let mut t = self.lock();
                if t.relisting {
                    t.relisting = false;
                    let current = t.generation;
                    let gone: Vec<String> = t
                        .by_name
                        .iter()
                        .filter(|(_, e)| e.generation < current)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for name in gone {
                        t.remove(&name);
                    }
                }
            }
            watcher::Event::Delete(csr) => {
                let (name, uid) = name_uid(csr);
                let mut t = self.lock();
                if t.by_name.get(name).is_some_and(|e| e.uid == uid) {
                    t.remove(name);
                }
            }
        }
    }

    /// Adds an undecided kubelet-serving CSR (without parsing it), or forgets a decided one.
    pub(crate) fn observe(&self, csr: &CertificateSigningRequest) {
        let (name, uid) = name_uid(csr);
        let now = self.clock.now();
        let mut t = self.lock();
        if !in_scope(csr) {
            t.remove(name);
            return;
        }
        t.upsert(name, uid, requestor_of(csr), now);
    }

    /// Forgets a CSR.
    pub(crate) fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The CSR's parsed request: the cached one, or parsed now (outside the lock) and kept
    /// together with the node index entry. The request is immutable, so one parse per CSR
    /// (uid) is enough.
    pub(crate) fn parsed(
        &self,
        csr: &CertificateSigningRequest,
        policy: &Policy,
    ) -> Arc<ParseResult> {
        let (name, uid) = name_uid(csr);
        if let Some(parsed) = self
            .lock()
            .by_name
            .get(name)
            .filter(|e| e.uid == uid)
            .and_then(|e| e.parsed.clone())
        {
            return parsed;
        }
        let parsed = Arc::new(parse_request(&csr.spec.request.0, policy));
        let node = match parsed.as_ref() {
            Ok(p) => p.node_name().map(str::to_owned),
            Err(_) => None,
        };
        let now = self.clock.now();
        let mut t = self.lock();
        let entry = t.upsert(name, uid, requestor_of(csr), now);
        if let Some(existing) = &entry.parsed {
            return Arc::clone(existing);
        }
        entry.parsed = Some(Arc::clone(&parsed));
        entry.node.clone_from(&node);
        if let Some(node) = node {
            t.by_node.entry(node).or_default().insert(name.to_owned());
        }
        if let Ok(p) = parsed.as_ref() {
            for ip in &p.sans().ips {
                t.by_ip.entry(*ip).or_default().insert(name.to_owned());
            }
        }
        parsed
    }

    /// When this replica first saw the CSR (on the attestation store's clock).
    pub(crate) fn first_seen(&self, name: &str, uid: &str) -> Option<Timestamp> {
        self.lock()
            .by_name
            .get(name)
            .filter(|e| e.uid == uid)
            .map(|e| e.first_seen)
    }

    /// Names of the undecided CSRs asking for any of `ips` as an IP SAN.
    pub(crate) fn csrs_asking_for(&self, ips: &HashSet<IpAddr>) -> HashSet<String> {
        let t = self.lock();
        ips.iter()
            .filter_map(|ip| t.by_ip.get(ip))
            .flatten()
            .cloned()
            .collect()
    }

    /// Names of the undecided CSRs asking for any IP SAN accepted by `matches`.
    pub(crate) fn csrs_asking_for_any(&self, matches: impl Fn(IpAddr) -> bool) -> HashSet<String> {
        let t = self.lock();
        t.by_ip
            .iter()
            .filter(|(ip, _)| matches(**ip))
            .flat_map(|(_, names)| names.iter().cloned())
            .collect()
    }

    /// Names of the undecided CSRs `requestor` created.
    pub(crate) fn csrs_by(&self, requestor: &str) -> Vec<String> {
        self.lock()
            .by_requestor
            .get(requestor)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many undecided CSRs `requestor` created.
    pub(crate) fn pending_by(&self, requestor: &str) -> usize {
        self.lock()
            .by_requestor
            .get(requestor)
            .map_or(0, HashSet::len)
    }

    /// The per-node flood valve's bound.
    pub(crate) fn per_requestor_bound(&self) -> usize {
        self.lock().per_requestor_bound
    }

    /// The pending CSRs the cluster-wide valve counts: at most the per-node bound per
    /// requestor, so one flooding node (already held by its own bound) cannot close it.
    pub(crate) fn capped_len(&self) -> usize {
        self.lock().capped_total
    }

    /// Requestors with more undecided CSRs than the per-node bound.
    pub(crate) fn requestors_over_bound(&self) -> usize {
        self.lock().over_bound
    }

    /// Names of the undecided CSRs whose request names `node`.
    pub(crate) fn csrs_of(&self, node: &str) -> Vec<String> {
        self.lock()
            .by_node
            .get(node)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The node a CSR's request names, once parsed.
    pub(crate) fn node_of(&self, name: &str) -> Option<String> {
        self.lock().by_name.get(name).and_then(|e| e.node.clone())
    }

    /// Names of the CSRs last explained as an address conflict.
    pub(crate) fn conflicted(&self) -> Vec<String> {
        self.lock().conflicted.iter().cloned().collect()
    }

    /// Records the CSR's explained state; says whether it changed. A CSR the table does
    /// not hold (decided or deleted meanwhile) reports no change.
    pub(crate) fn record(&self, name: &str, uid: &str, key: StateKey, waits: bool) -> Recorded {
        let mut t = self.lock();
        let Some(entry) = t.by_name.get_mut(name).filter(|e| e.uid == uid) else {
            return Recorded { changed: false };
        };
        let changed = entry.state != Some(key);
        entry.state = Some(key);
        entry.waited |= waits;
        if key.reason == "AddressConflict" {
            t.conflicted.insert(name.to_owned());
        } else {
            t.conflicted.remove(name);
        }
        Recorded { changed }
    }

    /// Forgets a state recorded for the CSR, so the next decision explains itself again
    /// (its Event could not be published).
    pub(crate) fn unrecord(&self, name: &str, uid: &str) {
        if let Some(entry) = self.lock().by_name.get_mut(name).filter(|e| e.uid == uid) {
            entry.state = None;
        }
    }

    /// What the table knows about a CSR about to be decided. Read it before writing the
    /// decision: the watch may report the decided CSR (and drop the entry) before the
    /// write's response arrives.
    pub(crate) fn known(&self, name: &str, uid: &str) -> Option<Decided> {
        self.lock()
            .by_name
            .get(name)
            .filter(|e| e.uid == uid)
            .map(|e| Decided {
                first_seen: e.first_seen,
                waited: e.waited,
            })
    }

    /// Counts a failed reconcile of the CSR; returns the failures in a row.
    pub(crate) fn failed(&self, name: &str) -> u32 {
        self.lock().by_name.get_mut(name).map_or(1, |e| {
            e.failures = e.failures.saturating_add(1);
            e.failures
        })
    }

    /// Resets the CSR's failure count after a successful reconcile.
    pub(crate) fn succeeded(&self, name: &str) {
        if let Some(e) = self.lock().by_name.get_mut(name) {
            e.failures = 0;
        }
    }

    /// Undecided kubelet-serving CSRs.
    pub(crate) fn len(&self) -> usize {
        self.lock().by_name.len()
    }

    /// The undecided CSRs counted by the reason last recorded for each (`None`: not yet
    /// explained), and the first sighting of the oldest, for the gauges.
    pub(crate) fn summary(&self) -> Summary {
        let t = self.lock();
        let mut by_reason: BTreeMap<Option<&'static str>, usize> = BTreeMap::new();
        for entry in t.by_name.values() {
            *by_reason.entry(entry.state.map(|s| s.reason)).or_default() += 1;
        }
        Summary {
            by_reason,
            oldest: t.by_name.values().map(|e| e.first_seen).min(),
        }
    }
}

/// What [`CsrTable::summary`] counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Undecided CSRs by their last recorded reason.
    pub(crate) by_reason: BTreeMap<Option<&'static str>, usize>,
    /// When the oldest undecided CSR was first seen.
    pub(crate) oldest: Option<Timestamp>,
}

// === impl Tables ===

impl Tables {
    fn upsert(&mut self, name: &str, uid: &str, requestor: &str, now: Timestamp) -> &mut Entry {
        let generation = self.generation;
        if self.by_name.get(name).is_some_and(|e| e.uid != uid) {
            // Deleted and created again under the same name: a different request.
            self.remove(name);
        }
        if !self.by_name.contains_key(name) {
            self.count_in(requestor, name);
        }
        let entry = self
            .by_name
            .entry(name.to_owned())
            .or_insert_with(|| Entry {
                uid: uid.to_owned(),
                requestor: requestor.to_owned(),
                generation,
                first_seen: now,
                parsed: None,
                node: None,
                state: None,
                waited: false,
                failures: 0,
            });
        entry.generation = generation;
        entry
    }

    fn remove(&mut self, name: &str) {
        let Some(entry) = self.by_name.remove(name) else {
            return;
        };
        if let Some(node) = entry.node
            && let Some(names) = self.by_node.get_mut(&node)
        {
            names.remove(name);
            if names.is_empty() {
                self.by_node.remove(&node);
            }
        }
        if let Some(Ok(parsed)) = entry.parsed.as_deref() {
            for ip in &parsed.sans().ips {
                if let Some(names) = self.by_ip.get_mut(ip) {
                    names.remove(name);
                    if names.is_empty() {
                        self.by_ip.remove(ip);
                    }
                }
            }
        }
        self.count_out(&entry.requestor, name);
        self.conflicted.remove(name);
    }

    /// Counts a new CSR of `requestor`.
    fn count_in(&mut self, requestor: &str, name: &str) {
        let names = self.by_requestor.entry(requestor.to_owned()).or_default();
        if names.insert(name.to_owned()) {
            let count = names.len();
            if count <= self.per_requestor_bound {
                self.capped_total += 1;
            }
            if count == self.per_requestor_bound + 1 {
                self.over_bound += 1;
            }
        }
    }

    /// Stops counting a CSR of `requestor`.
    fn count_out(&mut self, requestor: &str, name: &str) {
        let Some(names) = self.by_requestor.get_mut(requestor) else {
            return;
        };
        let count = names.len();
        if names.remove(name) {
            if count <= self.per_requestor_bound {
                self.capped_total -= 1;
            }
            if count == self.per_requestor_bound + 1 {
                self.over_bound -= 1;
            }
        }
        if names.is_empty() {
            self.by_requestor.remove(requestor);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestSpec,
        CertificateSigningRequestStatus,
    };
    use kube::api::ObjectMeta;
    use rubber_stamp_testkit::csr::CsrSpec;

    use super::*;

    fn mk_csr(
        name: &str,
        uid: &str,
        request: &[u8],
        condition: Option<&str>,
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(uid.to_owned()),
                ..ObjectMeta::default()
            },
            spec: CertificateSigningRequestSpec {
                signer_name: KUBELET_SERVING_SIGNER.to_owned(),
                request: ByteString(request.to_vec()),
                ..CertificateSigningRequestSpec::default()
            },
            status: condition.map(|c| CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: c.to_owned(),
                    status: "True".to_owned(),
                    ..CertificateSigningRequestCondition::default()
                }]),
                certificate: None,
            }),
        }
    }

    fn key(reason: &'static str) -> StateKey {
        StateKey {
            reason,
            fingerprint: 1,
        }
    }

    #[test]
    fn decided_and_deleted_csrs_leave_the_table() {
        let table = CsrTable::default();
        table.apply_event(&watcher::Event::Apply(mk_csr("a", "u1", b"x", None)));
        table.apply_event(&watcher::Event::Apply(mk_csr("b", "u2", b"x", None)));
        assert_eq!(table.len(), 2);
        table.apply_event(&watcher::Event::Apply(mk_csr(
            "a",
            "u1",
            b"x",
            Some("Approved"),
        )));
        assert_eq!(table.len(), 1);
        // A delete of another incarnation does not remove the current one.
        table.apply_event(&watcher::Event::Delete(mk_csr("b", "old", b"x", None)));
        assert_eq!(table.len(), 1);
        table.apply_event(&watcher::Event::Delete(mk_csr("b", "u2", b"x", None)));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_shows() {
        let table = CsrTable::default();
        for n in ["a", "b", "c"] {
            table.apply_event(&watcher::Event::Apply(mk_csr(n, n, b"x", None)));
        }
        table.apply_event(&watcher::Event::Init);
        table.apply_event(&watcher::Event::InitApply(mk_csr("b", "b", b"x", None)));
        table.apply_event(&watcher::Event::InitDone);
        assert_eq!(table.len(), 1);
        assert!(table.known("b", "b").is_some());
    }

    #[test]
    fn the_summary_counts_pending_csrs_by_their_last_reason() {
        let table = CsrTable::default();
        assert_eq!(table.summary(), Summary::default());
        for n in ["a", "b", "c"] {
            table.observe(&mk_csr(n, n, b"x", None));
        }
        table.record("a", "a", key("AddressConflict"), true);
        table.record("b", "b", key("AddressConflict"), true);
        let summary = table.summary();
        assert_eq!(
            summary.by_reason,
            BTreeMap::from([(None, 1), (Some("AddressConflict"), 2)])
        );
        assert!(summary.oldest.is_some());
        table.record("b", "b", key("AwaitingAttestation"), true);
        assert_eq!(
            table.summary().by_reason,
            BTreeMap::from([
                (None, 1),
                (Some("AddressConflict"), 1),
                (Some("AwaitingAttestation"), 1)
            ])
        );
    }

    #[test]
    fn states_are_recorded_once_and_conflicts_are_tracked() {
        let table = CsrTable::default();
        table.observe(&mk_csr("a", "u1", b"x", None));
        assert!(
            table
                .record("a", "u1", key("AwaitingAttestation"), true)
                .changed
        );
        assert!(
            !table
                .record("a", "u1", key("AwaitingAttestation"), true)
                .changed
        );
        assert!(
            table
                .record("a", "u1", key("AddressConflict"), true)
                .changed
        );
        assert_eq!(table.conflicted(), ["a"]);
        assert!(
            !table
                .record("a", "other-uid", key("Approved"), false)
                .changed
        );
        table.unrecord("a", "u1");
        assert!(
            table
                .record("a", "u1", key("AddressConflict"), true)
                .changed
        );
        let decided = table.known("a", "u1").expect("held");
        assert!(decided.waited);
        assert!(table.known("a", "other-uid").is_none());
        table.forget("a");
        assert!(table.conflicted().is_empty());
        assert_eq!(table.len(), 0);
    }

    fn mk_request(node: &str) -> Vec<u8> {
        CsrSpec::kubelet(node, &[node], &[]).pem().into_bytes()
    }

    #[test]
    fn a_parsed_request_indexes_its_node_until_the_csr_leaves() {
        let table = CsrTable::default();
        let policy = Policy::default();
        let request = mk_request("w1");
        for name in ["a", "b"] {
            let parsed = table.parsed(&mk_csr(name, name, &request, None), &policy);
            assert_eq!(
                parsed.as_ref().as_ref().ok().and_then(|p| p.node_name()),
                Some("w1")
            );
        }
        let mut of = table.csrs_of("w1");
        of.sort();
        assert_eq!(of, ["a", "b"]);
        table.apply_event(&watcher::Event::Apply(mk_csr(
            "a",
            "a",
            &request,
            Some("Denied"),
        )));
        assert_eq!(table.csrs_of("w1"), ["b"]);
        table.forget("b");
        assert!(table.csrs_of("w1").is_empty());
        assert_eq!(table.len(), 0);
    }

    fn mk_csr_by(name: &str, requestor: &str) -> CertificateSigningRequest {
        let mut csr = mk_csr(name, name, b"x", None);
        csr.spec.username = Some(requestor.to_owned());
        csr
    }

    #[test]
    fn each_requestor_counts_at_most_the_bound_toward_the_total() {
        let table = CsrTable::new(Arc::new(SystemClock), 2);
        for i in 0..5 {
            table.observe(&mk_csr_by(&format!("flood-{i}"), "system:node:bad"));
        }
        table.observe(&mk_csr_by("honest", "system:node:good"));
        assert_eq!(table.len(), 6);
        assert_eq!(table.pending_by("system:node:bad"), 5);
        assert_eq!(table.capped_len(), 3, "2 of bad's five, and good's one");
        assert_eq!(table.requestors_over_bound(), 1);
        // Seen again (an update): not counted twice.
        table.observe(&mk_csr_by("flood-0", "system:node:bad"));
        assert_eq!(table.pending_by("system:node:bad"), 5);
        for i in 0..3 {
            table.forget(&format!("flood-{i}"));
        }
        assert_eq!(table.pending_by("system:node:bad"), 2);
        assert_eq!((table.capped_len(), table.requestors_over_bound()), (3, 0));
        table.apply_event(&watcher::Event::Delete(mk_csr_by(
            "honest",
            "system:node:good",
        )));
        table.forget("flood-3");
        table.forget("flood-4");
        assert_eq!((table.len(), table.capped_len()), (0, 0));
        assert!(table.csrs_by("system:node:bad").is_empty());
    }

    #[test]
    fn a_parsed_request_indexes_its_ip_sans_until_the_csr_leaves() {
        let table = CsrTable::default();
        let pem = CsrSpec::kubelet("w1", &["w1"], &["10.96.0.1"]).pem();
        table.parsed(&mk_csr("a", "a", pem.as_bytes(), None), &Policy::default());
        let ip: IpAddr = "10.96.0.1".parse().expect("ip");
        assert_eq!(
            table.csrs_asking_for(&HashSet::from([ip])),
            HashSet::from(["a".to_owned()])
        );
        assert_eq!(table.csrs_asking_for_any(|i| i.is_ipv4()).len(), 1);
        table.forget("a");
        assert!(table.csrs_asking_for(&HashSet::from([ip])).is_empty());
    }

    #[test]
    fn parsing_happens_once_per_uid_and_indexes_the_node() {
        let table = CsrTable::default();
        let policy = Policy::default();
        let csr = mk_csr("a", "u1", b"not a pem", None);
        let first = table.parsed(&csr, &policy);
        let again = table.parsed(&csr, &policy);
        assert!(Arc::ptr_eq(&first, &again), "the cached parse is reused");
        assert!(first.is_err());
        // Re-created under the same name: parsed again.
        let recreated = table.parsed(&mk_csr("a", "u2", b"not a pem", None), &policy);
        assert!(!Arc::ptr_eq(&first, &recreated));
        assert_eq!(table.len(), 1);
        assert!(table.csrs_of("anything").is_empty());
    }
}
