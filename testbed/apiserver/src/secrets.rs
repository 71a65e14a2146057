//! Secret and ConfigMap rules of kube-apiserver that clients depend on: a Secret's `type`
//! defaults to `Opaque` (`SetDefaults_Secret`, pkg/apis/core/v1/defaults.go) and never
//! changes (`ValidateSecretUpdate`: "field is immutable"); `stringData` is folded into
//! `data` (`Convert_v1_Secret_To_core_Secret`, pkg/apis/core/v1/conversion.go); a
//! `kubernetes.io/tls` Secret needs `tls.crt` and `tls.key` (`ValidateSecret`); data keys
//! are config-map keys (`IsConfigMapKey`); and `immutable: true` freezes the data and
//! itself (`ValidateSecretUpdate`, `ValidateConfigMapUpdate`).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::status::Cause;

/// A Secret's type when the client sets none (`corev1.SecretTypeOpaque`).
pub const OPAQUE: &str = "Opaque";

/// `corev1.SecretTypeTLS`.
pub const TLS: &str = "kubernetes.io/tls";

/// The longest data key (`validation.IsConfigMapKey`: a DNS subdomain's length).
const MAX_KEY_BYTES: usize = 253;

/// What kube-apiserver does to a Secret body before validation, on create and update:
/// `stringData` folded into `data` (its values win) and the type defaulted.
pub fn prepare_secret(obj: &mut Value) {
    let Some(secret) = obj.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(strings)) = secret.remove("stringData") {
        let data = secret.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        if let Some(data) = data.as_object_mut() {
            for (key, value) in strings {
                let text = value.as_str().unwrap_or_default();
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(key, json!(encoded));
            }
        }
    }
    if secret
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        secret.insert("type".into(), json!(OPAQUE));
    }
}

fn data_of(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("data").and_then(Value::as_object)
}

/// `IsConfigMapKey`: `[-._a-zA-Z0-9]+`, at most 253 bytes, not `.` or `..` or `..`-led.
fn key_causes(field: &str, obj: &Value, out: &mut Vec<Cause>) {
    for key in data_of(obj).into_iter().flat_map(Map::keys) {
        let path = format!("{field}[{key}]");
        let quoted = format!("{key:?}");
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            out.push(Cause::invalid(
                path,
                &quoted,
                "must be no more than 253 characters",
            ));
        } else if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            out.push(Cause::invalid(
                path,
                &quoted,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ));
        } else if key == "." || key == ".." {
            out.push(Cause::invalid(path, &quoted, "must not be '.' or '..'"));
        } else if key.starts_with("..") {
            out.push(Cause::invalid(path, &quoted, "must not start with '..'"));
        }
    }
}

/// `ValidateSecret` (the parts clients meet): data keys, and the keys a
/// `kubernetes.io/tls` Secret must have.
pub fn validate_secret(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    key_causes("data", obj, &mut causes);
    if obj.get("type").and_then(Value::as_str) == Some(TLS) {
        for key in ["tls.crt", "tls.key"] {
            if !data_of(obj).is_some_and(|d| d.contains_key(key)) {
                causes.push(Cause::required(format!("data[{key}]"), ""));
            }
        }
    }
    causes
}

/// `ValidateSecretUpdate`: the type never changes, an immutable Secret's data and
/// `immutable` never change, then [`validate_secret`].
pub fn validate_secret_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let ty = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if ty(new) != ty(old) {
        causes.push(Cause::invalid(
            "type",
            &format!("{:?}", ty(new)),
            "field is immutable",
        ));
    }
    immutable_causes(new, old, &["data"], &mut causes);
    causes.extend(validate_secret(new));
    causes
}

/// `ValidateConfigMap` (data and binaryData keys).
pub fn validate_config_map(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    key_causes("data", obj, &mut causes);
    if let Some(binary) = obj.get("binaryData") {
        key_causes("binaryData", &json!({ "data": binary }), &mut causes);
    }
    causes
}

/// `ValidateConfigMapUpdate`: an immutable ConfigMap's data never changes.
pub fn validate_config_map_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    immutable_causes(new, old, &["data", "binaryData"], &mut causes);
    causes.extend(validate_config_map(new));
    causes
}

fn immutable_causes(new: &Value, old: &Value, fields: &[&str], out: &mut Vec<Cause>) {
    let frozen = |v: &Value| v.get("immutable").and_then(Value::as_bool) == Some(true);
    if !frozen(old) {
        return;
    }
    const WHY: &str = "field is immutable when `immutable` is set";
    if !frozen(new) {
        out.push(Cause::forbidden("immutable", WHY));
    }
    for field in fields {
        let empty = json!({});
        let value = |v: &Value| {
            v.get(*field)
                .filter(|d| !d.is_null())
                .unwrap_or(&empty)
                .clone()
        };
        if value(new) != value(old) {
            out.push(Cause::forbidden(*field, WHY));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_folds_into_data_and_the_type_defaults_to_opaque() {
        let mut s = json!({"data": {"a": "eA=="}, "stringData": {"a": "y", "b": "z"}});
        prepare_secret(&mut s);
        assert_eq!(
            s,
            json!({"data": {"a": "eQ==", "b": "eg=="}, "type": "Opaque"})
        );
    }

    #[test]
    fn a_secret_type_never_changes() {
        let old = json!({"type": "Opaque", "data": {}});
        let new = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        let causes = validate_secret_update(&new, &old);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "type");
        assert_eq!(
            causes[0].message,
            "Invalid value: \"kubernetes.io/tls\": field is immutable"
        );
    }

    #[test]
    fn a_tls_secret_needs_both_keys() {
        let causes =
            validate_secret(&json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}}));
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "data[tls.key]");
    }

    #[test]
    fn keys_are_config_map_keys() {
        let causes =
            validate_secret(&json!({"data": {"ok-key_1.x": "", "bad/key": "", "..x": ""}}));
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["data[..x]", "data[bad/key]"]);
    }

    #[test]
    fn immutable_objects_keep_their_data() {
        let old = json!({"immutable": true, "data": {"a": "eA=="}});
        let changed = json!({"immutable": true, "data": {"a": "eQ=="}});
        assert_eq!(validate_config_map_update(&changed, &old).len(), 1);
        let thawed = json!({"data": {"a": "eA=="}});
        assert_eq!(
            validate_config_map_update(&thawed, &old)[0].field,
            "immutable"
        );
        assert!(validate_config_map_update(&old, &old).is_empty());
    }
}
