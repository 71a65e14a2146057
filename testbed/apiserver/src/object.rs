//! What the verbs and the kinds' own rules share about objects, below both: name rules
//! (`IsDNS1123Label`), decoding through the typed struct with `fieldValidation`, the
//! `apiVersion`/`kind` check, and new uids. Kept apart from [`rest`](super::rest) so that
//! the kinds' modules (pods, tokens, …) that [`rest`](super::rest) calls never import it back.

use serde_json::Value;

use super::request::Query;
use super::resources::ResourceKind;
use super::status::ApiError;

// === name validation ===

/// `validation.DNS1123LabelErrorMsg` with its example and regex, as `IsDNS1123Label` words it.
pub(crate) const DNS_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

// === decoding and field validation ===

fn unknown_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(ov) => unknown_fields(v, ov, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                unknown_fields(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Typed round trip plus `fieldValidation` (Strict → 400, Warn → warnings, Ignore).
pub(crate) fn normalize(
    k: &ResourceKind,
    query: &Query,
    value: Value,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    let input = value.clone();
    let out = (k.normalize)(value).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {e}",
            k.kind, k.version, k.kind
        ))
    })?;
    let mut unknown = Vec::new();
    unknown_fields(&input, &out, "", &mut unknown);
    if !unknown.is_empty() {
        match query.get("fieldValidation").unwrap_or("Warn") {
            "Strict" => {
                let list = unknown
                    .iter()
                    .map(|u| format!("unknown field {u:?}"))
                    .collect::<Vec<_>>();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            "Ignore" => {}
            "Warn" | "" => warnings.extend(unknown.iter().map(|u| format!("unknown field {u:?}"))),
            other => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
                )));
            }
        }
    }
    Ok(out)
}

pub(crate) fn check_type_meta(k: &ResourceKind, v: &Value) -> Result<(), ApiError> {
    let want = k.api_version();
    match v.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av != want => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want})"
            )));
        }
        _ => {}
    }
    match v.get("kind").and_then(Value::as_str) {
        Some(kd) if kd != k.kind => Err(ApiError::bad_request(format!(
            "the kind in the data ({kd}) does not match the expected kind ({})",
            k.kind
        ))),
        _ => Ok(()),
    }
}

/// A random UUID (version 4), as `uuid.NewUUID` makes object uids and JWT ids.
pub(crate) fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}
