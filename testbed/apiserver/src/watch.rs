//! Watch streams: initial events or replayed history, then live changes
//! filtered by selectors (with ADDED/DELETED for objects entering or leaving
//! the selection), bookmarks, `sendInitialEvents`, timeouts, `410 Gone` for
//! compacted resourceVersions, and the fault hooks that drop or expire streams.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::request::{Output, Query, RequestInfo};
use super::resources::{ResourceId, ResourceKind, kind};
use super::rest::{selected, selectors};
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, Cause};
use super::store::{Change, ChangeType, ObjectKey, StoredObject, WatchFrom};
use super::table::{self, IncludeObject};
use super::{Reply, State};

/// Server-side watch timeout when the client sets none (kube-apiserver picks 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Frames buffered per watch before the writer waits for the client.
const FRAME_BUFFER: usize = 256;

type FrameResult = Result<Frame<Bytes>, std::io::Error>;

struct Filter {
    id: ResourceId,
    kind: &'static ResourceKind,
    namespace: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn passes(&self, key: &ObjectKey, obj: &StoredObject) -> bool {
        (self.namespace.is_empty() || key.namespace == self.namespace)
            && selected(self.kind, &self.labels, &self.fields, key, obj)
    }

    /// The event a watcher sees for a change, if any.
    fn convert(&self, change: &Change) -> Option<(&'static str, Arc<StoredObject>)> {
        let object = change.object.version(self.id);
        let prev = change.prev.as_ref().map(|p| p.version(self.id));
        let now = self.passes(&change.key, &object);
        let before = prev.as_ref().is_some_and(|p| self.passes(&change.key, p));
        match change.kind {
            ChangeType::Added => now.then_some(("ADDED", object)),
            ChangeType::Deleted => before.then_some(("DELETED", object)),
            ChangeType::Modified => match (before, now) {
                (true, true) => Some(("MODIFIED", object)),
                (false, true) => Some(("ADDED", object)),
                (true, false) => {
                    // Left the selection: DELETED with the old state at the new resourceVersion.
                    let value = prev?.value().ok()?;
                    Some((
                        "DELETED",
                        Arc::new(StoredObject::seal(self.id, value, object.rv)).version(self.id),
                    ))
                }
                (false, false) => None,
            },
        }
    }
}

fn event_bytes(ty: &str, obj: &StoredObject, k: &ResourceKind, output: Output) -> Bytes {
    let mut buf = Vec::with_capacity(obj.json.len() + 32);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(ty.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    match output {
        Output::Table | Output::Metadata => {
            let value = obj.value().unwrap_or(Value::Null);
            let converted = if output == Output::Table {
                table::table(
                    k,
                    std::slice::from_ref(&value),
                    IncludeObject::Metadata,
                    json!({"resourceVersion": obj.rv.to_string()}),
                    true,
                )
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": value.get("metadata").cloned().unwrap_or(json!({}))})
            };
            buf.extend_from_slice(converted.to_string().as_bytes());
        }
        _ => buf.extend_from_slice(&obj.json),
    }
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

fn bookmark_bytes(k: &ResourceKind, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": k.kind, "apiVersion": k.api_version(), "metadata": meta});
    Bytes::from(format!("{}\n", json!({"type": "BOOKMARK", "object": obj})))
}

fn error_bytes(e: &ApiError) -> Bytes {
    Bytes::from(format!(
        "{}\n",
        json!({"type": "ERROR", "object": e.to_status()})
    ))
}

fn stream_reply(rx: mpsc::Receiver<FrameResult>) -> Reply {
    Reply::stream(
        200,
        "application/json",
        StreamBody::new(ReceiverStream::new(rx)),
    )
}

/// Starts a watch and returns the streaming response.
pub fn watch(
    state: &Arc<State>,
    info: &RequestInfo,
    query: &Query,
    output: Output,
) -> Result<Reply, ApiError> {
    let k = kind(info.id);
    let (labels, mut fields) = selectors(k, query)?;
    if !info.name.is_empty() {
        let escaped = info
            .name
            .replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace('=', "\\=");
        fields = FieldSelector::parse(&format!("metadata.name={escaped}"), k)?;
    }
    let filter = Filter {
        id: info.id,
        kind: k,
        namespace: info.namespace.clone(),
        labels,
        fields,
    };
    let rv = query.get("resourceVersion").filter(|s| !s.is_empty());
    let send_initial = query.get("sendInitialEvents").map(|v| v == "true");
    let bookmarks = query.flag("allowWatchBookmarks");
    if send_initial.is_some() {
        let mut causes = Vec::new();
        if query.get("resourceVersionMatch") != Some("NotOlderThan") {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if send_initial == Some(true) && !bookmarks {
            causes.push(Cause::required(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
        if !causes.is_empty() {
            let mut e = ApiError::invalid(k, "", causes);
            e.message = format!(
                "ListOptions.meta.k8s.io \"\" is invalid: {}",
                e.message.split_once(": ").map_or("", |x| x.1)
            );
            return Err(e);
        }
    } else if query
        .get("resourceVersionMatch")
        .is_some_and(|m| !m.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden for watch",
        ));
    }
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let (tx, rx) = mpsc::channel::<FrameResult>(FRAME_BUFFER);
    if state.faults.take_expired_watch() {
        let e =
            ApiError::expired("too old resource version: injected by the testbed's fault handle");
        let _ = tx.try_send(Ok(Frame::data(error_bytes(&e))));
        return Ok(stream_reply(rx));
    }
    let from = match (rv, send_initial) {
        (_, Some(true)) | (None | Some("0"), None) => WatchFrom::Current,
        (None | Some("0"), Some(false)) => WatchFrom::After(state.store.current_rv()),
        (Some(n), _) => WatchFrom::After(
            n.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {n:?}")))?,
        ),
    };
    // A stale view (fault) starts a watch "from now" at the snapshot: its objects, then
    // the changes after it (held back until the view catches up).
    let stale = state.faults.stale_view(info.id);
    let from_current = from == WatchFrom::Current;
    let from = match (&stale, from) {
        (Some(view), WatchFrom::Current) => WatchFrom::After(view.rv),
        (_, from) => from,
    };
    let mut start = match state.store.watch(info.id, from) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.try_send(Ok(Frame::data(error_bytes(&e))));
            return Ok(stream_reply(rx));
        }
    };
    if let Some(view) = stale.filter(|_| from_current) {
        start.initial = view.objects_as(info.id);
        start.rv = view.rv;
    }
    let task = WatchTask {
        state: state.clone(),
        filter,
        output,
        bookmarks,
        initial_end_bookmark: send_initial == Some(true),
        timeout,
        tx,
    };
    tokio::spawn(task.run(start));
    Ok(stream_reply(rx))
}

struct WatchTask {
    state: Arc<State>,
    filter: Filter,
    output: Output,
    bookmarks: bool,
    initial_end_bookmark: bool,
    timeout: Duration,
    tx: mpsc::Sender<FrameResult>,
}

impl WatchTask {
    async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(Ok(Frame::data(bytes))).await.is_ok()
    }

    /// The resourceVersion a stale view (fault) of this kind freezes reads at, if any.
    fn frozen_at(&self) -> Option<u64> {
        self.state
            .faults
            .stale_view(self.filter.id)
            .map(|view| view.rv)
    }

    /// Sends the event a change makes for this watcher; false when the client is gone.
    async fn deliver(&self, change: &Change) -> bool {
        match self.filter.convert(change) {
            Some((ty, obj)) => {
                self.send(event_bytes(ty, &obj, self.filter.kind, self.output))
                    .await
            }
            None => true,
        }
    }

    /// Delivers `change` now, or queues it behind a stale view (and behind anything
    /// already queued, so order is kept); false when the client is gone.
    async fn offer(&self, held: &mut VecDeque<Arc<Change>>, change: Arc<Change>) -> bool {
        let frozen = self.frozen_at();
        if !held.is_empty() || frozen.is_some_and(|rv| change.object.rv > rv) {
            held.push_back(change);
            return true;
        }
        self.deliver(&change).await
    }

    /// Delivers the queued changes the view lets through now; false when the client is gone.
    async fn release(&self, held: &mut VecDeque<Arc<Change>>) -> bool {
        while let Some(change) = held.front() {
            if self.frozen_at().is_some_and(|rv| change.object.rv > rv) {
                break;
            }
            let change = held.pop_front().expect("front exists");
            if !self.deliver(&change).await {
                return false;
            }
        }
        true
    }

    /// The newest resourceVersion this watcher has seen or may announce: capped by a stale
    /// view.
    fn visible(&self, rv: u64) -> u64 {
        self.frozen_at().map_or(rv, |frozen| rv.min(frozen))
    }

    async fn run(self, start: super::store::WatchStart) {
        let k = self.filter.kind;
        let mut rx = start.rx;
        let mut last_rv = start.rv;
        // Changes a stale view (fault) holds back, in order: the watch stays responsive
        // (drops, timeouts, bookmarks at the view's resourceVersion, a departed client)
        // while they wait, as a lagging watch cache does.
        let mut held: VecDeque<Arc<Change>> = VecDeque::new();
        let mut caught_up = self.state.faults.caught_up_signal();
        caught_up.mark_unchanged();
        for (key, obj) in &start.initial {
            if self.filter.passes(key, obj)
                && !self.send(event_bytes("ADDED", obj, k, self.output)).await
            {
                return;
            }
        }
        if self.initial_end_bookmark && !self.send(bookmark_bytes(k, start.rv, true)).await {
            return;
        }
        for change in &start.replay {
            if !self.offer(&mut held, Arc::clone(change)).await {
                return;
            }
        }
        let mut drop_rx = self.state.faults.drop_signal();
        drop_rx.mark_unchanged();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut tick = tokio::time::interval(self.state.limits.bookmark_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                () = self.state.shutdown.cancelled() => return,
                () = self.tx.closed() => return,
                _ = drop_rx.changed() => {
                    let _ = self.tx.send(Err(std::io::Error::other("watch stream dropped by fault injection"))).await;
                    return;
                }
                () = tokio::time::sleep_until(deadline) => return,
                changed = caught_up.changed() => {
                    if changed.is_err() || !self.release(&mut held).await {
                        return;
                    }
                }
                _ = tick.tick(), if self.bookmarks => {
                    let current = self.state.store.current_rv();
                    loop {
                        match rx.try_recv() {
                            Ok(change) => {
                                if !self.offer(&mut held, change).await {
                                    return;
                                }
                            }
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(_) => return,
                        }
                    }
                    // Nothing held: everything up to now was delivered or filtered out.
                    if held.is_empty() {
                        last_rv = last_rv.max(self.visible(current));
                    }
                    if !self.send(bookmark_bytes(k, last_rv, false)).await {
                        return;
                    }
                }
                r = rx.recv() => match r {
                    Ok(change) => {
                        if !self.offer(&mut held, change).await {
                            return;
                        }
                    }
                    // A watcher that fell too far behind is closed, as kube-apiserver
                    // closes unresponsive watchers; it resumes from its last resourceVersion.
                    Err(_) => return,
                },
            }
        }
    }
}
