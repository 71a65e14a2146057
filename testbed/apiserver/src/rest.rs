//! The REST verbs on stored kinds — get, list, create, update, patch
//! (merge, JSON, strategic, apply), delete, deletecollection — with the
//! generic registry semantics of kube-apiserver (preconditions, generateName,
//! status subresources, finalizers, dryRun, field validation, managedFields)
//! plus the kind-specific strategies and admission checks.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::auth::UserInfo;
use super::csr;
use super::events;
use super::managed;
use super::now_rfc3339;
use super::object::{
    DNS_LABEL_MESSAGE, check_type_meta, is_dns_label, is_dns_subdomain, new_uid, normalize,
};
use super::pods;
use super::rbac::{Attributes, ResourceAttributes};
use super::request::{Ctx, Output, Query, RequestInfo, decode_body};
use super::resources::{Behaviour, ResourceId, ResourceKind, Subresource, ids, kind};
use super::secrets;
use super::selector::{FieldSelector, LabelSelector};
use super::services;
use super::status::{ApiError, Cause};
use super::store::{ObjectKey, StoreError, StoredObject};
use super::table::{self, IncludeObject};
use super::tokens;
use super::versions::into_storage;
use super::{Reply, State};

/// How many times a write is retried on an internal resourceVersion race.
const MAX_WRITE_ATTEMPTS: usize = 16;
/// How many names a create with `generateName` tries (kube-apiserver: 8).
const GENERATE_NAME_ATTEMPTS: usize = 8;

fn key_of(info: &RequestInfo) -> ObjectKey {
    ObjectKey::new(&info.namespace, &info.name)
}

fn store_err(e: StoreError, k: &ResourceKind, name: &str) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(k, name),
        StoreError::AlreadyExists => ApiError::already_exists(k, name),
        StoreError::Conflict => ApiError::conflict(k, name),
    }
}

fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    match v.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

// === responses ===

fn object_reply(
    code: u16,
    k: &ResourceKind,
    obj: &Value,
    output: Output,
    warnings: Vec<String>,
) -> Reply {
    let body = match output {
        Output::Table => table::table(
            k,
            std::slice::from_ref(obj),
            IncludeObject::Metadata,
            json!({"resourceVersion": meta_str(obj, "resourceVersion")}),
            true,
        ),
        Output::Metadata => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
        }
        _ => obj.clone(),
    };
    Reply::value(code, &body, output).with_warnings(warnings)
}

fn stored_reply(
    code: u16,
    k: &ResourceKind,
    obj: &StoredObject,
    output: Output,
) -> Result<Reply, ApiError> {
    match output {
        Output::Json => Ok(Reply::json_bytes(code, obj.json.clone())),
        _ => Ok(object_reply(code, k, &obj.value()?, output, Vec::new())),
    }
}

fn validate_name(k: &ResourceKind, name: &str) -> Option<Cause> {
    let path_segment = k.group == "rbac.authorization.k8s.io" || k.behaviour == Behaviour::Csr;
    if path_segment {
        if name == "." || name == ".." {
            return Some(Cause::invalid(
                "metadata.name",
                &format!("{name:?}"),
                &format!("may not be '{name}'"),
            ));
        }
        for bad in ["/", "%"] {
            if name.contains(bad) {
                return Some(Cause::invalid(
                    "metadata.name",
                    &format!("{name:?}"),
                    &format!("may not contain '{bad}'"),
                ));
            }
        }
        return None;
    }
    if k.behaviour == Behaviour::Namespace {
        return (!is_dns_label(name))
            .then(|| Cause::invalid("metadata.name", &format!("{name:?}"), DNS_LABEL_MESSAGE));
    }
    (!is_dns_subdomain(name)).then(|| {
        Cause::invalid(
            "metadata.name",
            &format!("{name:?}"),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    })
}

/// Suffixes tests force on `generateName`, taken before random ones.
#[cfg(test)]
pub(crate) static FORCED_SUFFIXES: std::sync::Mutex<Vec<String>> =
    std::sync::Mutex::new(Vec::new());

fn generate_suffix() -> String {
    #[cfg(test)]
    if let Some(forced) = FORCED_SUFFIXES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop()
    {
        return forced;
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

// === authorisation helpers used by admission ===

fn allowed(state: &State, user: &UserInfo, verb: &str, attrs: &ResourceAttributes) -> bool {
    state
        .authz
        .authorize(&Attributes {
            user,
            verb,
            resource: Some(attrs),
            path: "",
        })
        .allowed
}

/// The CertificateApproval/CertificateSigning admission check: `verb` on
/// `signers` for the exact signerName or `<domain>/*`.
fn signer_allowed(state: &State, user: &UserInfo, verb: &str, signer: &str) -> bool {
    let attrs = |name: String| ResourceAttributes {
        group: "certificates.k8s.io".into(),
        resource: "signers".into(),
        name,
        ..ResourceAttributes::default()
    };
    if allowed(state, user, verb, &attrs(signer.to_owned())) {
        return true;
    }
    signer
        .split_once('/')
        .is_some_and(|(domain, _)| allowed(state, user, verb, &attrs(format!("{domain}/*"))))
}

/// NodeRestriction for creates: a node may create only its own Node and Lease.
fn node_restriction(user: &UserInfo, k: &ResourceKind, key: &ObjectKey) -> Result<(), ApiError> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    match k.behaviour {
        Behaviour::Node if key.name != node => Err(ApiError::forbidden(
            k,
            &key.name,
            &format!("node {node:?} is not allowed to modify node {:?}", key.name),
        )),
        Behaviour::Lease if key.namespace == "kube-node-lease" && key.name != node => {
            Err(ApiError::forbidden(
                k,
                &key.name,
                "can only access node lease with the same name as the requesting node",
            ))
        }
        _ => Ok(()),
    }
}

// === get / list ===

/// GET of one object (or its subresource, which returns the whole object).
pub fn get(ctx: &Ctx<'_>, info: &RequestInfo) -> Result<Reply, ApiError> {
    let k = kind(info.id);
    let obj = ctx
        .state
        .store
        .get(info.id, &key_of(info))
        .ok_or_else(|| ApiError::not_found(k, &info.name))?;
    stored_reply(200, k, &obj, ctx.output)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

fn encode_continue(rv: u64, key: &ObjectKey) -> String {
    let t = ContinueToken {
        rv,
        ns: key.namespace.clone(),
        name: key.name.clone(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<ContinueToken, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::bad_request(format!("continue key is not valid: {s:?}")))
}

/// The selectors of a list or watch request.
pub fn selectors(k: &ResourceKind, q: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), k)?,
    ))
}

/// Whether a stored object passes both selectors.
pub fn selected(
    k: &ResourceKind,
    labels: &LabelSelector,
    fields: &FieldSelector,
    key: &ObjectKey,
    obj: &StoredObject,
) -> bool {
    labels.matches(&obj.labels) && fields.matches(k, &key.namespace, &key.name, &obj.fields)
}

/// LIST with selectors, pagination and resourceVersion semantics.
pub fn list(ctx: &Ctx<'_>, info: &RequestInfo) -> Result<Reply, ApiError> {
    let k = kind(info.id);
    let store = &ctx.state.store;
    let (labels, fields) = selectors(k, ctx.query)?;
    let limit = match ctx.query.get("limit") {
        None | Some("") | Some("0") => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
    };
    let rv_param = ctx.query.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = ctx
        .query
        .get("resourceVersionMatch")
        .filter(|s| !s.is_empty());
    let token = match ctx.query.get("continue").filter(|s| !s.is_empty()) {
        Some(c) => {
            if rv_param.is_some_and(|r| r != "0") {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let t = decode_continue(c)?;
            if t.rv < store.compacted(info.id) {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            Some(t)
        }
        None => None,
    };
    if rv_match.is_some() && rv_param.is_none() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    if let Some(rv) = rv_param {
        let n: u64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?;
        let current = store.current_rv();
        match rv_match {
            Some("Exact") if n != current => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {n} ({current}); the testbed serves lists only at the current resourceVersion"
                )));
            }
            Some("Exact" | "NotOlderThan") | None => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
        }
        if n > current {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {n}, current: {current}"
            )));
        }
    }
    let after = token.as_ref().map(|t| ObjectKey::new(&t.ns, &t.name));
    let namespace = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
    let pred = |key: &ObjectKey, o: &StoredObject| selected(k, &labels, &fields, key, o);
    let stale = ctx
        .state
        .faults
        .stale_view(info.id)
        .filter(|_| token.is_none());
    if let (Some(view), Some(rv)) = (&stale, rv_param)
        && let Ok(n) = rv.parse::<u64>()
        && n > view.rv
    {
        // A cache behind the resourceVersion asked for waits, then answers 504.
        return Err(ApiError::timeout(format!(
            "Too large resource version: {n}, current: {}",
            view.rv
        )));
    }
    let page = match stale {
        // A lagging cache answers its snapshot whole (no pagination).
        Some(view) => view.page(info.id, namespace, pred),
        None => store.list(info.id, namespace, after.as_ref(), limit, pred),
    };
    let list_rv = token.as_ref().map_or(page.rv, |t| t.rv);
    let mut list_meta = json!({"resourceVersion": list_rv.to_string()});
    if let Some(next) = &page.next {
        list_meta["continue"] = json!(encode_continue(list_rv, next));
        if labels.is_empty() && fields.is_empty() {
            list_meta["remainingItemCount"] = json!(page.remaining);
        }
    }
    match ctx.output {
        Output::Json => {
            let mut buf = Vec::with_capacity(
                page.items.iter().map(|o| o.json.len() + 1).sum::<usize>() + 256,
            );
            buf.extend_from_slice(
                format!(
                    "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                    k.kind,
                    k.api_version(),
                    list_meta
                )
                .as_bytes(),
            );
            for (i, o) in page.items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(&o.json);
            }
            buf.extend_from_slice(b"]}");
            Ok(Reply::json_bytes(200, Bytes::from(buf)))
        }
        output => {
            let values = page
                .items
                .iter()
                .map(|o| o.value())
                .collect::<Result<Vec<_>, _>>()?;
            let body = match output {
                Output::Table => {
                    let include = match ctx.query.get("includeObject") {
                        Some("None") => IncludeObject::None,
                        Some("Object") => IncludeObject::Object,
                        _ => IncludeObject::Metadata,
                    };
                    table::table(k, &values, include, list_meta, true)
                }
                Output::Metadata => json!({
                    "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
                    "items": values.iter().map(|v| json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": v.get("metadata").cloned().unwrap_or(json!({}))})).collect::<Vec<_>>()}),
                _ => json!({"kind": format!("{}List", k.kind), "apiVersion": k.api_version(),
                            "metadata": list_meta, "items": values}),
            };
            Ok(Reply::value(200, &body, output))
        }
    }
}

// === create ===

/// Prepares a new object for storage (identity, defaults, validation) without committing it.
pub fn prepare_create(
    state: &State,
    user: &UserInfo,
    id: ResourceId,
    namespace: &str,
    mut obj: Value,
    manager: Option<&str>,
) -> Result<(ObjectKey, Value), ApiError> {
    let k = kind(id);
    check_type_meta(k, &obj)?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    obj["apiVersion"] = json!(k.api_version());
    obj["kind"] = json!(k.kind);
    let now = now_rfc3339();
    {
        let meta = meta_mut(&mut obj);
        if k.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), json!(namespace));
                }
            }
        } else {
            meta.remove("namespace");
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if name.is_empty() {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let prefix: String = prefix.chars().take(58).collect();
                    meta.insert(
                        "name".into(),
                        json!(format!("{prefix}{}", generate_suffix())),
                    );
                }
                _ => {
                    return Err(ApiError::invalid(
                        k,
                        "",
                        vec![Cause::required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    ));
                }
            }
        }
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now));
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            meta.remove(f);
        }
    }
    let name = meta_str(&obj, "name").to_owned();
    let key = ObjectKey::new(if k.namespaced { namespace } else { "" }, &name);
    match k.behaviour {
        Behaviour::Csr => csr::prepare_create(&mut obj, user),
        Behaviour::Namespace => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        Behaviour::Secret => secrets::prepare_secret(&mut obj),
        Behaviour::Pod => {
            // Defaults, then the ServiceAccount admission plugin: mutating admission runs
            // before validation.
            pods::prepare_create(&mut obj);
            pods::admit_service_account(state, &mut obj, namespace, &name)?;
        }
        _ => {}
    }
    let mut causes: Vec<Cause> = validate_name(k, &name).into_iter().collect();
    match k.behaviour {
        Behaviour::Csr => causes.extend(csr::validate(&obj)),
        Behaviour::Service => causes.extend(services::prepare_create(&mut obj, &state.services)),
        Behaviour::ServiceCidr => causes.extend(services::validate_service_cidr(&obj)),
        Behaviour::Secret => causes.extend(secrets::validate_secret(&obj)),
        Behaviour::ConfigMap => causes.extend(secrets::validate_config_map(&obj)),
        Behaviour::Event => {
            causes.extend(events::validate_create(&into_storage(id, &obj), k.group))
        }
        Behaviour::Pod => causes.extend(pods::validate(&obj)),
        _ => {}
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(k, &name, causes));
    }
    node_restriction(user, k, &key)?;
    if k.behaviour == Behaviour::Csr
        && obj.pointer("/spec/signerName").and_then(Value::as_str)
            == Some("kubernetes.io/kube-apiserver-client")
        && let Ok(req) = csr::parse_request(&obj)
        && request_has_masters(&req.0)
    {
        return Err(ApiError::forbidden(
            k,
            &name,
            "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed",
        ));
    }
    if k.namespaced
        && state
            .store
            .get(ids::namespaces(), &ObjectKey::new("", namespace))
            .is_none()
    {
        return Err(ApiError::not_found(kind(ids::namespaces()), namespace));
    }
    if let Some(m) = manager {
        managed::track_update(k, None, &mut obj, m, "", &now);
    }
    Ok((key, obj))
}

fn request_has_masters(der: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    x509_parser::certification_request::X509CertificationRequest::from_der(der).is_ok_and(
        |(_, r)| {
            r.certification_request_info
                .subject
                .iter_organization()
                .any(|o| o.as_str() == Ok("system:masters"))
        },
    )
}

/// POST of a new object.
pub fn create(ctx: &Ctx<'_>, info: &RequestInfo) -> Result<Reply, ApiError> {
    let k = kind(info.id);
    let dry_run = ctx.query.dry_run()?;
    let mut warnings = Vec::new();
    let body = decode_body(ctx.content_type, &ctx.body)?;
    let body = normalize(k, ctx.query, body, &mut warnings)?;
    let manager = ctx.field_manager();
    match create_object(
        ctx.state,
        ctx.user,
        info.id,
        &info.namespace,
        body,
        Some(&manager),
        dry_run,
    )? {
        Created::DryRun(obj) => Ok(object_reply(201, k, &obj, ctx.output, warnings)),
        Created::Stored(stored) => {
            Ok(stored_reply(201, k, &stored, ctx.output)?.with_warnings(warnings))
        }
    }
}

/// What [`create_object`] made.
#[derive(Debug)]
pub enum Created {
    /// The object as it would have been stored (`dryRun=All`).
    DryRun(Value),
    /// The stored object.
    Stored(Arc<StoredObject>),
}

/// Prepares (identity, defaults, validation) and stores a new object. A generated name
/// that is taken is generated again, as kube-apiserver does since 1.32
/// (RetryGenerateName): five random characters collide within a few thousand objects.
pub fn create_object(
    state: &State,
    user: &UserInfo,
    id: ResourceId,
    namespace: &str,
    body: Value,
    manager: Option<&str>,
    dry_run: bool,
) -> Result<Created, ApiError> {
    let generated = meta_str(&body, "name").is_empty();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (key, mut obj) = prepare_create(state, user, id, namespace, body.clone(), manager)?;
        if dry_run {
            // A dry run shows the ClusterIP it would get, reserving nothing (the
            // allocators' DryRun()).
            if kind(id).behaviour == Behaviour::Service {
                let page = state.store.list(id, None, None, None, |_, _| true);
                services::allocate(
                    &mut obj,
                    &mut page.items.iter().map(|o| &**o),
                    &state.services,
                )
                .map_err(|c| ApiError::invalid(kind(id), &key.name, vec![c]))?;
            }
            return Ok(Created::DryRun(obj));
        }
        match store_new(state, id, key.clone(), obj)? {
            Ok(stored) => return Ok(Created::Stored(stored)),
            Err(StoreError::AlreadyExists) if generated && attempts < GENERATE_NAME_ATTEMPTS => {}
            Err(e) => return Err(store_err(e, kind(id), &key.name)),
        }
    }
}

/// Stores a new object. A Service gets its ClusterIPs allocated under the store's lock,
/// atomically with the write (`Allocators.allocateCreate` runs in the same transaction as
/// the create); the outer error is such an allocation's refusal.
pub fn store_new(
    state: &State,
    id: ResourceId,
    key: ObjectKey,
    obj: Value,
) -> Result<Result<Arc<StoredObject>, StoreError>, ApiError> {
    let k = kind(id);
    if k.behaviour != Behaviour::Service {
        return Ok(state.store.create(id, key, obj));
    }
    let name = key.name.clone();
    state.store.create_finishing(id, key, obj, |obj, existing| {
        services::allocate(obj, existing, &state.services)
            .map_err(|c| ApiError::invalid(k, &name, vec![c]))
    })
}

// === update and patch ===

/// What produces the new object from the current one.
#[derive(Debug)]
enum Mutation {
    Replace(Value),
    Patch(super::patch::PatchType),
}

/// Whether two objects are equal but for the `time` of their managedFields entries (a
/// write that changes nothing else is a no-op). Compares in place: no copies.
fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    fn same_map(
        a: &Map<String, Value>,
        b: &Map<String, Value>,
        eq: impl Fn(&str, &Value, &Value) -> bool,
    ) -> bool {
        a.len() == b.len()
            && a.iter()
                .all(|(k, va)| b.get(k).is_some_and(|vb| eq(k, va, vb)))
    }
    let entry = |x: &Value, y: &Value| match (x, y) {
        (Value::Object(x), Value::Object(y)) => same_map(x, y, |k, p, q| k == "time" || p == q),
        _ => x == y,
    };
    let managed = |x: &Value, y: &Value| match (x, y) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| entry(p, q))
        }
        _ => x == y,
    };
    let metadata = |x: &Value, y: &Value| match (x, y) {
        (Value::Object(x), Value::Object(y)) => same_map(x, y, |k, p, q| {
            if k == "managedFields" {
                managed(p, q)
            } else {
                p == q
            }
        }),
        _ => x == y,
    };
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => same_map(a, b, |k, p, q| {
            if k == "metadata" {
                metadata(p, q)
            } else {
                p == q
            }
        }),
        _ => a == b,
    }
}

fn carry_metadata(
    k: &ResourceKind,
    new: &mut Value,
    old: &Value,
    name: &str,
) -> Result<(), ApiError> {
    let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
    let meta = meta_mut(new);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        let given = meta
            .get(f)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        if f == "uid"
            && let Some(g) = &given
            && Some(g.as_str()) != old_meta.get("uid").and_then(Value::as_str)
        {
            return Err(ApiError::conflict_because(
                k,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {g}, UID in object meta: {}",
                    old_meta.get("uid").and_then(Value::as_str).unwrap_or("")
                ),
            ));
        }
        match old_meta.get(f) {
            Some(v) => {
                meta.insert(f.into(), v.clone());
            }
            None => {
                meta.remove(f);
            }
        }
    }
    match old_meta.get("managedFields") {
        Some(v) => {
            meta.insert("managedFields".into(), v.clone());
        }
        None => {
            meta.remove("managedFields");
        }
    }
    Ok(())
}

fn apply_strategy(
    k: &ResourceKind,
    new: &mut Value,
    old: &Value,
    sub: Option<Subresource>,
    now: &str,
) {
    if k.behaviour == Behaviour::Csr {
        csr::prepare_update(new, old, sub, now);
        return;
    }
    if !k.has_subresource(Subresource::Status) {
        return;
    }
    match sub {
        Some(Subresource::Status) => {
            let status = new.get("status").cloned();
            *new = {
                let mut o = old.clone();
                match status {
                    Some(s) => o["status"] = s,
                    None => {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                o
            };
        }
        _ => match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        },
    }
}

/// PUT (`Replace`) and PATCH of an object or its subresource.
pub fn update(ctx: &Ctx<'_>, info: &RequestInfo) -> Result<Reply, ApiError> {
    let mutation = if info.verb == "patch" {
        let ct = ctx.content_type.unwrap_or("");
        let ty = super::patch::PatchType::from_content_type(ct)
            .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
        Mutation::Patch(ty)
    } else {
        Mutation::Replace(decode_body(ctx.content_type, &ctx.body)?)
    };
    write(ctx, info, &mutation)
}

fn write(ctx: &Ctx<'_>, info: &RequestInfo, mutation: &Mutation) -> Result<Reply, ApiError> {
    use super::patch::{self, PatchType};
    let k = kind(info.id);
    let key = key_of(info);
    let store = &ctx.state.store;
    let dry_run = ctx.query.dry_run()?;
    let manager = ctx.field_manager();
    let is_apply = matches!(mutation, Mutation::Patch(PatchType::Apply));
    let force = ctx.query.flag("force");
    if force && !is_apply {
        return Err(ApiError::bad_request(
            "force is only allowed for apply patches",
        ));
    }
    if is_apply && ctx.query.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError {
            code: 422,
            reason: "Invalid",
            message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            details: None,
            retry_after: None,
        });
    }
    let sub_name = info.subresource.map_or("", Subresource::name);
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let mut warnings = Vec::new();
        let now = now_rfc3339();
        let current = store.get(info.id, &key);
        let old = current.as_ref().map(|c| c.value()).transpose()?;
        let old_rv = current.as_ref().map_or(0, |c| c.rv);
        // 1. produce the candidate object.
        let mut candidate = match (mutation, &old) {
            (Mutation::Replace(body), Some(_)) => body.clone(),
            (Mutation::Replace(_), None) => return Err(ApiError::not_found(k, &info.name)),
            (Mutation::Patch(PatchType::Apply), old) => {
                let applied: Value = serde_yaml::from_slice(&ctx.body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                if applied
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                    || applied
                        .get("kind")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                {
                    return Err(ApiError::bad_request(
                        "apiVersion and kind must be set in an apply patch",
                    ));
                }
                check_type_meta(k, &applied)?;
                let applied_name = meta_str(&applied, "name");
                if !applied_name.is_empty() && applied_name != info.name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({applied_name}) does not match the name on the URL ({})",
                        info.name
                    )));
                }
                let applied = normalize(k, ctx.query, applied, &mut warnings)?;
                let base = old.clone().unwrap_or_else(|| {
                    json!({"apiVersion": k.api_version(), "kind": k.kind, "metadata": {"name": info.name}})
                });
                managed::apply(k, &info.name, &base, &applied, &manager, force, &now)?
            }
            (Mutation::Patch(_), None) => return Err(ApiError::not_found(k, &info.name)),
            (Mutation::Patch(ty), Some(old)) => {
                let mut target = old.clone();
                match ty {
                    PatchType::Json => patch::json_patch(&mut target, &ctx.body)?,
                    PatchType::Merge => patch::merge_patch(&mut target, &ctx.body)?,
                    PatchType::Strategic => {
                        patch::strategic_merge_patch(&mut target, &ctx.body, k.merge_keys)?
                    }
                    PatchType::Apply => unreachable!("handled above"),
                }
                target
            }
        };
        // Apply to a missing object creates it.
        let Some(old) = old else {
            if dry_run {
                let (_, obj) = prepare_create(
                    ctx.state,
                    ctx.user,
                    info.id,
                    &info.namespace,
                    candidate,
                    None,
                )?;
                return Ok(object_reply(201, k, &obj, ctx.output, warnings));
            }
            let managed_fields = candidate.pointer("/metadata/managedFields").cloned();
            let (key, mut obj) = prepare_create(
                ctx.state,
                ctx.user,
                info.id,
                &info.namespace,
                candidate,
                None,
            )?;
            if let Some(mf) = managed_fields {
                meta_mut(&mut obj).insert("managedFields".into(), mf);
            }
            return match store_new(ctx.state, info.id, key.clone(), obj)? {
                Ok(stored) => {
                    Ok(stored_reply(201, k, &stored, ctx.output)?.with_warnings(warnings))
                }
                Err(StoreError::AlreadyExists) => continue,
                Err(e) => Err(store_err(e, k, &key.name)),
            };
        };
        // 2. identity and preconditions.
        check_type_meta(k, &candidate)?;
        if !candidate.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be an object",
            ));
        }
        let body_name = meta_str(&candidate, "name").to_owned();
        if body_name.is_empty() {
            meta_mut(&mut candidate).insert("name".into(), json!(info.name));
        } else if body_name != info.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                info.name
            )));
        }
        let body_ns = meta_str(&candidate, "namespace").to_owned();
        if k.namespaced && !body_ns.is_empty() && body_ns != info.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        // A PUT's resourceVersion is a precondition; a patch result carries the
        // current one unless the patch itself set another.
        let precondition =
            match meta_str(&candidate, "resourceVersion") {
                "" => None,
                rv if matches!(mutation, Mutation::Patch(_)) && rv == old_rv.to_string() => None,
                rv => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
        if precondition.is_some_and(|p| p != old_rv) {
            return Err(ApiError::conflict(k, &info.name));
        }
        let mut new = normalize(k, ctx.query, candidate, &mut warnings)?;
        new["apiVersion"] = json!(k.api_version());
        new["kind"] = json!(k.kind);
        if k.namespaced {
            meta_mut(&mut new).insert("namespace".into(), json!(info.namespace));
        }
        let applied_managed = is_apply
            .then(|| new.pointer("/metadata/managedFields").cloned())
            .flatten();
        carry_metadata(k, &mut new, &old, &info.name)?;
        // 3. strategy, admission, validation.
        apply_strategy(k, &mut new, &old, info.subresource, &now);
        let causes = match k.behaviour {
            Behaviour::Service => services::prepare_update(&mut new, &old),
            Behaviour::ServiceCidr => services::validate_service_cidr(&new),
            Behaviour::Secret => {
                secrets::prepare_secret(&mut new);
                secrets::validate_secret_update(&new, &old)
            }
            Behaviour::ConfigMap => secrets::validate_config_map_update(&new, &old),
            Behaviour::Csr => csr::validate_update(&new, &old, info.subresource),
            Behaviour::Pod => pods::validate_update(&mut new, &old),
            Behaviour::Event => events::validate_update(
                &into_storage(info.id, &new),
                &into_storage(info.id, &old),
                k.group,
            ),
            _ => Vec::new(),
        };
        // Validation (422) comes before the validating admission plugins
        // (NodeRestriction, CertificateApproval, CertificateSigning: 403), as in the
        // registry's update.
        if !causes.is_empty() {
            return Err(ApiError::invalid(k, &info.name, causes));
        }
        node_restriction(ctx.user, k, &key)?;
        if k.behaviour == Behaviour::Csr {
            let signer = old
                .pointer("/spec/signerName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if info.subresource == Some(Subresource::Approval)
                && !signer_allowed(ctx.state, ctx.user, "approve", signer)
            {
                return Err(ApiError::forbidden(
                    k,
                    &info.name,
                    &format!("user not permitted to approve requests with signerName {signer:?}"),
                ));
            }
            let cert = |v: &Value| v.pointer("/status/certificate").cloned();
            if info.subresource == Some(Subresource::Status)
                && cert(&new) != cert(&old)
                && !signer_allowed(ctx.state, ctx.user, "sign", signer)
            {
                return Err(ApiError::forbidden(
                    k,
                    &info.name,
                    &format!("user not permitted to sign requests with signerName {signer:?}"),
                ));
            }
        }
        // 4. field ownership.
        match applied_managed {
            Some(mf) => {
                meta_mut(&mut new).insert("managedFields".into(), mf);
            }
            None => managed::track_update(k, Some(&old), &mut new, &manager, sub_name, &now),
        }
        // 5. no-op, dry run, finalization, commit.
        meta_mut(&mut new).insert("resourceVersion".into(), json!(old_rv.to_string()));
        if same_ignoring_times(&new, &old) {
            return Ok(object_reply(200, k, &old, ctx.output, warnings));
        }
        if dry_run {
            return Ok(object_reply(200, k, &new, ctx.output, warnings));
        }
        let finalized = new
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null())
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if finalized {
            return match store.delete(info.id, &key, Some(old_rv)) {
                Ok(gone) => Ok(stored_reply(200, k, &gone, ctx.output)?.with_warnings(warnings)),
                Err(StoreError::Conflict) if precondition.is_none() => continue,
                Err(e) => Err(store_err(e, k, &info.name)),
            };
        }
        match store.update(info.id, &key, old_rv, new) {
            Ok(stored) => {
                return Ok(stored_reply(200, k, &stored, ctx.output)?.with_warnings(warnings));
            }
            Err(StoreError::Conflict) if precondition.is_none() => continue,
            Err(e) => return Err(store_err(e, k, &info.name)),
        }
    }
    Err(ApiError::conflict(k, &info.name))
}

// === delete ===

#[derive(Debug, Default)]
struct DeleteOptions {
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn delete_options(ctx: &Ctx<'_>) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions {
        dry_run: ctx.query.dry_run()?,
        ..DeleteOptions::default()
    };
    if !ctx.body.is_empty() {
        let v = decode_body(ctx.content_type, &ctx.body)?;
        opts.uid = v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        opts.resource_version = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match v.get("dryRun").and_then(Value::as_array) {
            Some(d) if d.iter().any(|x| x == "All") => opts.dry_run = true,
            Some(d) if !d.is_empty() => return Err(ApiError::bad_request("Invalid dry run value")),
            _ => {}
        }
    }
    Ok(opts)
}

fn delete_one(
    ctx: &Ctx<'_>,
    id: ResourceId,
    key: &ObjectKey,
    opts: &DeleteOptions,
) -> Result<(u16, Arc<StoredObject>), ApiError> {
    let k = kind(id);
    let store = &ctx.state.store;
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let current = store
            .get(id, key)
            .ok_or_else(|| ApiError::not_found(k, &key.name))?;
        let value = current.value()?;
        if let Some(uid) = &opts.uid
            && uid != meta_str(&value, "uid")
        {
            return Err(ApiError::conflict_because(
                k,
                &key.name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&value, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && *rv != current.rv.to_string()
        {
            return Err(ApiError::conflict_because(
                k,
                &key.name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current.rv
                ),
            ));
        }
        if opts.dry_run {
            return Ok((200, current));
        }
        let has_finalizers = value
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if value
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|t| !t.is_null())
            {
                return Ok((202, current));
            }
            let mut marked = value;
            let meta = meta_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            match store.update(id, key, current.rv, marked) {
                Ok(o) => return Ok((202, o)),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(store_err(e, k, &key.name)),
            }
        }
        if k.behaviour == Behaviour::Namespace {
            purge_namespace(ctx, &key.name);
        }
        match store.delete(id, key, Some(current.rv)) {
            Ok(o) => return Ok((200, o)),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(store_err(e, k, &key.name)),
        }
    }
    Err(ApiError::conflict(k, &key.name))
}

fn purge_namespace(ctx: &Ctx<'_>, namespace: &str) {
    let store = &ctx.state.store;
    for (id, k) in super::resources::KINDS.iter().enumerate() {
        if !k.namespaced || !k.stored() {
            continue;
        }
        let page = store.list(id, Some(namespace), None, None, |_, _| true);
        for o in page.items {
            if let Ok(v) = o.value() {
                let _ = store.delete(id, &ObjectKey::new(namespace, meta_str(&v, "name")), None);
            }
        }
    }
}

/// DELETE of one object.
pub fn delete(ctx: &Ctx<'_>, info: &RequestInfo) -> Result<Reply, ApiError> {
    let opts = delete_options(ctx)?;
    let (code, obj) = delete_one(ctx, info.id, &key_of(info), &opts)?;
    stored_reply(code, kind(info.id), &obj, ctx.output)
}

/// DELETE of a collection (with selectors).
pub fn delete_collection(ctx: &Ctx<'_>, info: &RequestInfo) -> Result<Reply, ApiError> {
    let k = kind(info.id);
    let opts = delete_options(ctx)?;
    let (labels, fields) = selectors(k, ctx.query)?;
    let namespace = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
    let page = ctx
        .state
        .store
        .list(info.id, namespace, None, None, |key, o| {
            selected(k, &labels, &fields, key, o)
        });
    let mut items = Vec::new();
    for o in page.items {
        let v = o.value()?;
        let key = ObjectKey::new(meta_str(&v, "namespace"), meta_str(&v, "name"));
        match delete_one(ctx, info.id, &key, &opts) {
            Ok((_, gone)) => items.push(gone.value()?),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({"kind": format!("{}List", k.kind), "apiVersion": k.api_version(),
                      "metadata": {"resourceVersion": ctx.state.store.current_rv().to_string()}, "items": items});
    Ok(Reply::value(200, &body, ctx.output))
}

// === reviews ===

fn review_attrs(spec: &Value) -> Result<(String, Option<ResourceAttributes>, String), Vec<Cause>> {
    let ra = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let nra = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    match (ra, nra) {
        (Some(r), None) => {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            Ok((
                s("verb"),
                Some(ResourceAttributes {
                    namespace: s("namespace"),
                    group: s("group"),
                    resource: s("resource"),
                    subresource: s("subresource"),
                    name: s("name"),
                }),
                String::new(),
            ))
        }
        (None, Some(n)) => {
            let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            Ok((s("verb"), None, s("path")))
        }
        _ => Err(vec![Cause::invalid(
            "spec.resourceAttributes",
            "null",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )]),
    }
}

/// POST of SubjectAccessReview, SelfSubjectAccessReview or SelfSubjectReview.
pub fn review(ctx: &Ctx<'_>, info: &RequestInfo) -> Result<Reply, ApiError> {
    let k = kind(info.id);
    let mut warnings = Vec::new();
    let body = decode_body(ctx.content_type, &ctx.body)?;
    check_type_meta(k, &body)?;
    let mut obj = normalize(k, ctx.query, body, &mut warnings)?;
    obj["apiVersion"] = json!(k.api_version());
    obj["kind"] = json!(k.kind);
    if k.kind == "TokenReview" {
        return tokens::review(ctx.state, obj, ctx.output, warnings);
    }
    if k.kind == "SelfSubjectReview" {
        let u = ctx.user;
        obj["status"] = json!({"userInfo": {"username": u.name, "uid": u.uid, "groups": u.groups, "extra": u.extra}});
        return Ok(object_reply(201, k, &obj, ctx.output, warnings));
    }
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let (verb, resource, path) = review_attrs(&spec).map_err(|c| ApiError::invalid(k, "", c))?;
    let subject = if k.kind == "SubjectAccessReview" {
        let user = spec
            .get("user")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let groups: Vec<String> = spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if user.is_empty() && groups.is_empty() {
            return Err(ApiError::invalid(
                k,
                "",
                vec![Cause::invalid(
                    "spec.user",
                    "\"\"",
                    "at least one of user or group must be specified",
                )],
            ));
        }
        UserInfo {
            name: user,
            uid: spec
                .get("uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            groups,
            extra: spec
                .get("extra")
                .and_then(|e| serde_json::from_value(e.clone()).ok())
                .unwrap_or_default(),
        }
    } else {
        ctx.user.clone()
    };
    let decision = ctx.state.authz.authorize(&Attributes {
        user: &subject,
        verb: &verb,
        resource: resource.as_ref(),
        path: &path,
    });
    let mut status = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        status["reason"] = json!(decision.reason);
    }
    obj["status"] = status;
    Ok(object_reply(201, k, &obj, ctx.output, warnings))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use serde_json::json;

    use super::FORCED_SUFFIXES;
    use crate::{Cluster, ClusterOptions};

    #[test]
    fn only_managed_field_times_are_ignored_when_looking_for_a_no_op() {
        let obj = |time: &str, data: &str| {
            json!({"metadata": {"name": "a", "managedFields": [
                {"manager": "m", "operation": "Update", "time": time}]},
                "data": {"k": data}})
        };
        let same = super::same_ignoring_times;
        assert!(same(&obj("t1", "v"), &obj("t2", "v")));
        assert!(!same(&obj("t1", "v"), &obj("t1", "w")));
        let mut other_manager = obj("t1", "v");
        other_manager["metadata"]["managedFields"][0]["manager"] = json!("n");
        assert!(!same(&obj("t1", "v"), &other_manager));
        let mut extra = obj("t1", "v");
        extra["metadata"]["labels"] = json!({"a": "b"});
        assert!(!same(&obj("t1", "v"), &extra));
        assert!(!same(&extra, &obj("t1", "v")));
    }

    #[tokio::test]
    async fn a_generated_name_that_is_taken_is_generated_again() {
        let cluster = Cluster::start(ClusterOptions {
            signer: None,
            ..ClusterOptions::default()
        })
        .await
        .expect("cluster");
        let generated = ConfigMap {
            metadata: ObjectMeta {
                generate_name: Some("retry-".to_owned()),
                namespace: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        // The first create takes "retry-taken"; the second draws it again, then "fresh".
        *FORCED_SUFFIXES.lock().expect("lock") =
            vec!["fresh".to_owned(), "taken".to_owned(), "taken".to_owned()];
        let first = cluster.objects().create(&generated).expect("first");
        let second = cluster.objects().create(&generated).expect("second");
        assert_eq!(first.metadata.name.as_deref(), Some("retry-taken"));
        assert_eq!(second.metadata.name.as_deref(), Some("retry-fresh"));
        assert!(FORCED_SUFFIXES.lock().expect("lock").is_empty());
        cluster.shutdown().await;
    }
}
