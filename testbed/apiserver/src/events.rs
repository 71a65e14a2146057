//! Events, as kube-apiserver keeps them: one store of core `v1` Events, seen through
//! `events.k8s.io/v1` as well (`Convert_v1_Event_To_core_Event` and back,
//! pkg/apis/events/v1/conversion.go: `regarding` is `involvedObject`, `note` is `message`,
//! `reportingController` is `reportingComponent`, `deprecated*` are the legacy fields),
//! validated as `ValidateEventCreate` and `ValidateEventUpdate` do
//! (pkg/apis/core/validation/events.go): the legacy rules for every request, the strict
//! ones for requests through `events.k8s.io`.
//!
//! Validation works on the core form, like kube-apiserver's on its internal type, so the
//! field paths in errors are the core names (`message`, `involvedObject.namespace`), as
//! a real server reports them.

use serde_json::{Map, Value, json};

use crate::status::Cause;

/// `ReportingInstanceLengthLimit`.
pub const REPORTING_INSTANCE_LIMIT: usize = 128;
/// `ActionLengthLimit`.
pub const ACTION_LIMIT: usize = 128;
/// `ReasonLengthLimit`.
pub const REASON_LIMIT: usize = 128;
/// `NoteLengthLimit` (bytes of `note`/`message`).
pub const NOTE_LIMIT: usize = 1024;

/// The API group whose requests get the strict rules.
pub const EVENTS_GROUP: &str = "events.k8s.io";

/// Field renames between core `v1` (left) and `events.k8s.io/v1` (right).
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(
    value: &Value,
    api_version: &str,
    pairs: impl Iterator<Item = (&'static str, &'static str)>,
) -> Value {
    let Some(fields) = value.as_object() else {
        return value.clone();
    };
    let mut out: Map<String, Value> = fields.clone();
    for (from, to) in pairs {
        out.remove(to);
        if let Some(v) = fields.get(from) {
            out.remove(from);
            out.insert(to.to_owned(), v.clone());
        }
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// An `events.k8s.io/v1` Event in its stored (core `v1`) form.
pub fn to_core(event: &Value) -> Value {
    let mut core = rename(event, "v1", RENAMES.iter().map(|&(core, v1)| (v1, core)));
    // The core type's `involvedObject` is not optional: an Event without `regarding`
    // reads back with an empty reference.
    if let Some(fields) = core.as_object_mut() {
        fields.entry("involvedObject").or_insert_with(|| json!({}));
    }
    core
}

/// A stored (core `v1`) Event as `events.k8s.io/v1` serves it.
pub fn from_core(event: &Value) -> Value {
    let mut v1 = rename(event, "events.k8s.io/v1", RENAMES.iter().copied());
    // An empty reference is what a missing `regarding` became; `EventSource{}` likewise.
    if let Some(fields) = v1.as_object_mut() {
        for field in ["regarding", "deprecatedSource"] {
            if fields
                .get(field)
                .is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
            {
                fields.remove(field);
            }
        }
    }
    v1
}

fn text<'a>(event: &'a Value, field: &str) -> &'a str {
    event.get(field).and_then(Value::as_str).unwrap_or("")
}

fn set(event: &Value, pointer: &str) -> bool {
    event
        .pointer(pointer)
        .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
}

fn namespace(event: &Value) -> &str {
    event
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `ValidateEventCreate`: the legacy rules, then for `events.k8s.io` requests the strict
/// ones. `event` is the core form; `group` the request's API group.
pub fn validate_create(event: &Value, group: &str) -> Vec<Cause> {
    let mut causes = legacy(event, group);
    if group != EVENTS_GROUP {
        return causes;
    }
    causes.extend(series(event));
    if !set(event, "/eventTime") {
        causes.push(Cause::required("eventTime", ""));
    }
    let ty = text(event, "type");
    if ty != "Normal" && ty != "Warning" {
        causes.push(Cause::invalid(
            "type",
            "\"\"",
            &format!("has invalid value: {ty}"),
        ));
    }
    for field in ["firstTimestamp", "lastTimestamp"] {
        if set(event, &format!("/{field}")) {
            causes.push(Cause::invalid(field, "\"\"", "needs to be unset"));
        }
    }
    if event.get("count").and_then(Value::as_i64).unwrap_or(0) != 0 {
        causes.push(Cause::invalid("count", "\"\"", "needs to be unset"));
    }
    if set(event, "/source/component") || set(event, "/source/host") {
        causes.push(Cause::invalid("source", "\"\"", "needs to be unset"));
    }
    causes
}

/// `ValidateEventUpdate`: the legacy rules on the new Event, then for `events.k8s.io`
/// requests the series rules (when it changed) and every field but the series immutable.
pub fn validate_update(new: &Value, old: &Value, group: &str) -> Vec<Cause> {
    let mut causes = legacy(new, group);
    if group != EVENTS_GROUP {
        return causes;
    }
    if new.get("series") != old.get("series") {
        causes.extend(series(new));
    }
    for field in [
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "eventTime",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    ] {
        let (n, o) = (new.get(field), old.get(field));
        if !same(n, o) {
            let shown = n.map(Value::to_string).unwrap_or_else(|| "null".to_owned());
            let path = if field == "reportingComponent" {
                "reportingController"
            } else {
                field
            };
            causes.push(Cause::invalid(path, &shown, "field is immutable"));
        }
    }
    causes
}

/// Equal, counting a missing field, `null`, `""`, `0` and `{}` alike (Go's zero values).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    fn zero(v: Option<&Value>) -> bool {
        match v {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::Object(m)) => m.values().all(|v| zero(Some(v))),
            _ => false,
        }
    }
    a == b || (zero(a) && zero(b))
}

/// `validateV1EventSeries`.
fn series(event: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(series) = event.get("series").filter(|s| s.is_object()) {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            causes.push(Cause::invalid(
                "series.count",
                "\"\"",
                "should be at least 2",
            ));
        }
        if !set(series, "/lastObservedTime") {
            causes.push(Cause::required("series.lastObservedTime", ""));
        }
    }
    causes
}

/// `legacyValidateEvent`: namespaces agree with the regarded object's; an Event with an
/// `eventTime` names its reporter, action and reason within their limits.
fn legacy(event: &Value, group: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let ns = namespace(event);
    let involved_ns = event
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mismatch = || {
        Cause::invalid(
            "involvedObject.namespace",
            &format!("{involved_ns:?}"),
            "does not match event.namespace",
        )
    };
    if !set(event, "/eventTime") {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                causes.push(mismatch());
            }
        } else if ns != involved_ns {
            causes.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            causes.push(mismatch());
        }
        let controller_field = if group == EVENTS_GROUP {
            "reportingController"
        } else {
            "reportingComponent"
        };
        let controller = text(event, "reportingComponent");
        if controller.is_empty() {
            causes.push(Cause::required(controller_field, ""));
        }
        causes.extend(
            qualified_name_errors(controller)
                .into_iter()
                .map(|msg| Cause::invalid(controller_field, &format!("{controller:?}"), &msg)),
        );
        let bounded = [
            ("reportingInstance", REPORTING_INSTANCE_LIMIT, true),
            ("action", ACTION_LIMIT, true),
            ("reason", REASON_LIMIT, true),
            ("message", NOTE_LIMIT, false),
        ];
        for (field, limit, required) in bounded {
            let value = text(event, field);
            if required && value.is_empty() {
                causes.push(Cause::required(field, ""));
            }
            if value.len() > limit {
                causes.push(Cause::invalid(
                    field,
                    "\"\"",
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
    }
    if !is_dns1123_subdomain(ns) {
        causes.push(Cause::invalid(
            "namespace",
            &format!("{ns:?}"),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ));
    }
    causes
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters, alphanumeric at both ends with `-`, `_` and `.` inside.
fn qualified_name_errors(value: &str) -> Vec<String> {
    const NAME_FMT: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else if !is_dns1123_subdomain(prefix) {
                errors.push(format!("prefix part {}", "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
            }
            name
        }
        _ => {
            errors.push(format!("a qualified name {NAME_FMT} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_owned());
    }
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    let well_formed = edge(name.bytes().next())
        && edge(name.bytes().last())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name.is_empty() && !well_formed {
        errors.push(NAME_FMT.to_owned());
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "csr-1.abc", "namespace": "default"},
            "eventTime": "2026-12-05T06:00:00.000000Z",
            "reportingController": "rubber-stamp-approver",
            "reportingInstance": "approver-0",
            "action": "Approve", "reason": "Approved", "type": "Normal",
            "note": "all checks passed",
            "regarding": {"kind": "CertificateSigningRequest", "name": "csr-1",
                          "apiVersion": "certificates.k8s.io/v1", "uid": "u1"},
        })
    }

    #[test]
    fn the_two_versions_convert_both_ways_without_loss() {
        let v1 = v1_event();
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["message"], "all checks passed");
        assert_eq!(core["involvedObject"]["name"], "csr-1");
        assert_eq!(core["reportingComponent"], "rubber-stamp-approver");
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
        assert_eq!(from_core(&core), v1);
    }

    #[test]
    fn an_approver_event_about_a_cluster_scoped_object_is_valid_in_default_only() {
        // legacyValidateEvent: eventTime set, involvedObject.namespace empty → the Event
        // lives in default or kube-system.
        let core = to_core(&v1_event());
        assert!(validate_create(&core, EVENTS_GROUP).is_empty());
        let mut elsewhere = core.clone();
        elsewhere["metadata"]["namespace"] = json!("kube-public");
        let causes = validate_create(&elsewhere, EVENTS_GROUP);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "involvedObject.namespace");
    }

    #[test]
    fn strict_rules_apply_to_events_k8s_io_requests_only() {
        // ValidateEventCreate: no eventTime is fine for a core request (legacy Event)
        // but required through events.k8s.io; deprecated fields must be unset there.
        let mut core = to_core(&v1_event());
        core.as_object_mut().map(|m| m.remove("eventTime"));
        core["count"] = json!(3);
        core["firstTimestamp"] = json!("2026-12-05T06:00:00Z");
        assert!(validate_create(&core, "").is_empty());
        let fields: Vec<String> = validate_create(&core, EVENTS_GROUP)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, ["eventTime", "firstTimestamp", "count"]);
    }

    #[test]
    fn limits_are_the_api_servers() {
        let mut core = to_core(&v1_event());
        core["reportingInstance"] = json!("i".repeat(REPORTING_INSTANCE_LIMIT + 1));
        core["message"] = json!("n".repeat(NOTE_LIMIT + 1));
        core["action"] = json!("");
        core["reason"] = json!("r".repeat(REASON_LIMIT + 1));
        core["reportingComponent"] = json!("not a qualified name");
        let fields: Vec<String> = validate_create(&core, "")
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            [
                "reportingComponent",
                "reportingInstance",
                "action",
                "reason",
                "message"
            ]
        );
        let mut at_limit = to_core(&v1_event());
        at_limit["reportingInstance"] = json!("i".repeat(REPORTING_INSTANCE_LIMIT));
        at_limit["message"] = json!("n".repeat(NOTE_LIMIT));
        assert!(validate_create(&at_limit, EVENTS_GROUP).is_empty());
    }

    #[test]
    fn an_update_may_only_move_the_series() {
        // ValidateEventUpdate: the Recorder's series patch passes; changing the note does not.
        let old = to_core(&v1_event());
        let mut next = old.clone();
        next["series"] = json!({"count": 2, "lastObservedTime": "2026-12-05T06:01:00.000000Z"});
        assert!(validate_update(&next, &old, EVENTS_GROUP).is_empty());
        next["series"]["count"] = json!(1);
        next["message"] = json!("changed");
        let fields: Vec<String> = validate_update(&next, &old, EVENTS_GROUP)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, ["series.count", "message"]);
        // A core request keeps the legacy freedom (count and lastTimestamp move).
        assert!(validate_update(&next, &old, "").is_empty());
    }
}
