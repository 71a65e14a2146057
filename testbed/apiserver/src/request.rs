//! Request parsing: the kube-apiserver `RequestInfo` (verb, group, version,
//! namespace, resource, name, subresource), query parameters, content
//! negotiation of responses and decoding of request bodies, and the [`Ctx`] a verb
//! handler gets.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::State;
use super::auth::UserInfo;
use super::resources::{self, Behaviour, ResourceId, Subresource, kind};
use super::status::ApiError;

/// A parsed resource request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// The kind.
    pub id: ResourceId,
    /// kube verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'static str,
    /// Namespace from the path, empty if none.
    pub namespace: String,
    /// Name from the path, empty if none.
    pub name: String,
    /// Subresource.
    pub subresource: Option<Subresource>,
}

/// Query parameters.
#[derive(Clone, Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a query string.
    pub fn parse(q: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// A parameter's (last) value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// `dryRun`: `All` is honoured, anything else is a 400.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: dryRun: Unsupported value: {other:?}: supported values: \"All\""
            ))),
        }
    }
}

/// Parses the path below `/api/v1` or `/apis/<group>/<version>` and the method.
pub fn parse_resource_path(
    group: &str,
    version: &str,
    rest: &[&str],
    method: &http::Method,
    query: &Query,
) -> Result<RequestInfo, ApiError> {
    let mut parts = rest;
    let mut legacy_watch = false;
    if parts.first() == Some(&"watch") {
        legacy_watch = true;
        parts = &parts[1..];
    }
    let mut namespace = "";
    if parts.first() == Some(&"namespaces") && parts.len() > 1 {
        let is_ns_sub = parts.len() == 3 && matches!(parts[2], "status" | "finalize");
        if parts.len() > 2 && !is_ns_sub {
            namespace = parts[1];
            parts = &parts[2..];
        }
    }
    let (resource, name, sub) = match parts {
        [r] => (*r, "", None),
        [r, n] => (*r, *n, None),
        [r, n, s] => (*r, *n, Some(*s)),
        _ => return Err(ApiError::no_route()),
    };
    let id = resources::find(group, version, resource).ok_or_else(ApiError::no_route)?;
    let k = kind(id);
    if !namespace.is_empty() && !k.namespaced {
        return Err(ApiError::no_route());
    }
    let subresource = match sub {
        None => None,
        Some(s) => Some(
            k.subresources
                .iter()
                .copied()
                .find(|x| x.name() == s)
                .ok_or_else(ApiError::no_route)?,
        ),
    };
    let watch = legacy_watch || query.flag("watch");
    let verb = match (method.as_str(), name.is_empty()) {
        _ if k.behaviour == Behaviour::Review => match (method.as_str(), name.is_empty()) {
            ("POST", true) => "create",
            _ => return Err(ApiError::method_not_allowed("")),
        },
        ("GET", false) if watch => "watch",
        ("GET", false) => "get",
        ("GET", true) if watch => "watch",
        ("GET", true) => "list",
        ("POST", true) if subresource.is_none() => "create",
        // A named create of a subresource (`serviceaccounts/NAME/token`: `rest.NamedCreater`).
        ("POST", false) if subresource.is_some() => "create",
        ("PUT", false) => "update",
        ("PATCH", false) => "patch",
        ("DELETE", false) if subresource.is_none() => "delete",
        ("DELETE", true) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed("")),
    };
    if subresource.is_some_and(|s| !s.verbs().contains(&verb)) {
        return Err(ApiError::method_not_allowed(""));
    }
    if k.namespaced && namespace.is_empty() && matches!(verb, "create" | "deletecollection") {
        return Err(ApiError::method_not_allowed(""));
    }
    if k.namespaced && namespace.is_empty() && !name.is_empty() {
        return Err(ApiError::no_route());
    }
    let (verb, name) = if verb == "watch" && !name.is_empty() {
        ("watch", name)
    } else {
        (verb, name)
    };
    Ok(RequestInfo {
        id,
        verb,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        subresource,
    })
}

/// What the client accepts back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// JSON objects and lists.
    Json,
    /// YAML.
    Yaml,
    /// `meta.k8s.io/v1` Table.
    Table,
    /// `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
    /// `apidiscovery.k8s.io/v2` aggregated discovery.
    AggregatedDiscovery,
}

fn media_params(item: &str) -> (String, Vec<(String, String)>) {
    let mut it = item.split(';');
    let base = it.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = it
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    (base, params)
}

/// Picks the first acceptable media type of an `Accept` header.
pub fn negotiate(accept: Option<&str>) -> Result<Output, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    for item in accept.split(',') {
        let (base, params) = media_params(item);
        let p = |k: &str| {
            params
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.as_str())
        };
        let json_like = matches!(base.as_str(), "application/json" | "*/*" | "application/*");
        if base == "application/yaml" && p("as").is_none() {
            return Ok(Output::Yaml);
        }
        if !json_like {
            continue;
        }
        match (p("as"), p("g"), p("v")) {
            (None, _, _) => return Ok(Output::Json),
            (Some("Table"), Some("meta.k8s.io"), Some("v1")) => return Ok(Output::Table),
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some("v1"),
            ) => {
                return Ok(Output::Metadata);
            }
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2")) => {
                return Ok(Output::AggregatedDiscovery);
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// Decodes a request body (JSON, or YAML for `application/yaml`).
pub fn decode_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let base = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| "application/json".to_owned());
    match base.as_str() {
        "application/json" | "" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}"))),
        super::proto::CONTENT_TYPE => super::proto::decode_object(body),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn info(group: &str, path: &str, method: Method, query: &str) -> Result<RequestInfo, ApiError> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        parse_resource_path(group, "v1", &parts, &method, &Query::parse(Some(query)))
    }

    #[test]
    fn request_info_like_kube_apiserver() {
        let r = info("", "namespaces/kube-system/configmaps/x", Method::GET, "").expect("get");
        assert_eq!(
            (r.verb, r.namespace.as_str(), r.name.as_str()),
            ("get", "kube-system", "x")
        );
        let r = info("", "namespaces/kube-system", Method::GET, "").expect("ns get");
        assert_eq!(
            (r.verb, kind(r.id).plural, r.name.as_str()),
            ("get", "namespaces", "kube-system")
        );
        let r = info("", "namespaces/x/status", Method::PUT, "").expect("ns status");
        assert_eq!(r.subresource, Some(Subresource::Status));
        let r = info(
            "certificates.k8s.io",
            "certificatesigningrequests/c/approval",
            Method::PUT,
            "",
        )
        .expect("approval");
        assert_eq!(
            (r.verb, r.subresource),
            ("update", Some(Subresource::Approval))
        );
        let r = info("", "nodes", Method::GET, "watch=true").expect("watch");
        assert_eq!(r.verb, "watch");
        let r = info("", "watch/nodes", Method::GET, "").expect("legacy watch");
        assert_eq!(r.verb, "watch");
        assert_eq!(
            info("", "endpoints", Method::GET, "").map_err(|e| e.code),
            Err(404)
        );
        let r = info(
            "",
            "namespaces/ns/serviceaccounts/sa/token",
            Method::POST,
            "",
        )
        .expect("token request");
        assert_eq!(
            (r.verb, r.subresource, r.name.as_str()),
            ("create", Some(Subresource::Token), "sa")
        );
        assert_eq!(
            info(
                "",
                "namespaces/ns/serviceaccounts/sa/token",
                Method::GET,
                ""
            )
            .map_err(|e| e.code),
            Err(405),
            "the token subresource is create-only"
        );
        assert_eq!(
            info("", "namespaces/ns/pods/p/status", Method::POST, "").map_err(|e| e.code),
            Err(405)
        );
        assert_eq!(
            info("", "nodes/n/bogus", Method::GET, "").map_err(|e| e.code),
            Err(404)
        );
        assert_eq!(
            info("", "namespaces/x/nodes", Method::GET, "").map_err(|e| e.code),
            Err(404)
        );
        assert_eq!(
            info("", "nodes", Method::PUT, "").map_err(|e| e.code),
            Err(405)
        );
        assert_eq!(
            info(
                "authorization.k8s.io",
                "subjectaccessreviews",
                Method::GET,
                ""
            )
            .map_err(|e| e.code),
            Err(405)
        );
    }

    #[test]
    fn content_negotiation() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(kubectl)), Ok(Output::Table));
        assert_eq!(
            negotiate(Some(
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            )),
            Ok(Output::Json)
        );
        assert_eq!(negotiate(None), Ok(Output::Json));
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
            )),
            Ok(Output::AggregatedDiscovery)
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf")).map_err(|e| e.code),
            Err(406)
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*")),
            Ok(Output::Json)
        );
    }
}

/// Everything a verb handler needs about the request.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Shared server state.
    pub state: &'a Arc<State>,
    /// The authenticated user.
    pub user: &'a UserInfo,
    /// Query parameters.
    pub query: &'a Query,
    /// Negotiated output.
    pub output: Output,
    /// `User-Agent`, for the default field manager.
    pub user_agent: &'a str,
    /// `Content-Type` of the body.
    pub content_type: Option<&'a str>,
    /// The body.
    pub body: Bytes,
}

impl Ctx<'_> {
    pub(crate) fn field_manager(&self) -> String {
        match self.query.get("fieldManager") {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ => self
                .user_agent
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .to_owned(),
        }
    }
}
