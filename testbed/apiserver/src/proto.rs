//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! into JSON, for the kinds kubectl's typed clients write: CertificateSigningRequest
//! (`kubectl certificate approve|deny`), the access reviews (`kubectl auth`), Secret and
//! ConfigMap (`kubectl create secret|configmap`), ServiceAccount (`kubectl create
//! serviceaccount`), TokenRequest (`kubectl create token`) and TokenReview.
//! Responses are always JSON, which those clients accept too.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::status::ApiError;

/// The Content-Type of Kubernetes protobuf.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\x00";
/// Nesting limit while decoding.
const MAX_DEPTH: usize = 32;

#[derive(Clone, Copy, Debug)]
enum Ty {
    Str,
    Bytes,
    I64,
    I32,
    Bool,
    Time,
    Msg(&'static [Field]),
    MapStr,
    /// `map<string, bytes>`, values as base64 (JSON's `[]byte`).
    MapBytes,
    MapExtra,
    RawJson,
}

#[derive(Debug)]
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn r(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
    }
}

static OWNER_REFERENCE: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "controller", Ty::Bool),
    f(7, "blockOwnerDeletion", Ty::Bool),
];

static MANAGED_FIELDS_ENTRY: &[Field] = &[
    f(1, "manager", Ty::Str),
    f(2, "operation", Ty::Str),
    f(3, "apiVersion", Ty::Str),
    f(4, "time", Ty::Time),
    f(6, "fieldsType", Ty::Str),
    f(7, "fieldsV1", Ty::RawJson),
    f(8, "subresource", Ty::Str),
];

static OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(4, "selfLink", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::I64),
    f(8, "creationTimestamp", Ty::Time),
    f(9, "deletionTimestamp", Ty::Time),
    f(10, "deletionGracePeriodSeconds", Ty::I64),
    f(11, "labels", Ty::MapStr),
    f(12, "annotations", Ty::MapStr),
    r(13, "ownerReferences", Ty::Msg(OWNER_REFERENCE)),
    r(14, "finalizers", Ty::Str),
    r(17, "managedFields", Ty::Msg(MANAGED_FIELDS_ENTRY)),
];

// k8s.io/api/core/v1 generated.proto.
static SECRET: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapBytes),
    f(3, "type", Ty::Str),
    f(4, "stringData", Ty::MapStr),
    f(5, "immutable", Ty::Bool),
];

static CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapStr),
    f(3, "binaryData", Ty::MapBytes),
    f(4, "immutable", Ty::Bool),
];

static OBJECT_REFERENCE: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "namespace", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "fieldPath", Ty::Str),
];

static LOCAL_OBJECT_REFERENCE: &[Field] = &[f(1, "name", Ty::Str)];

static SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    r(2, "secrets", Ty::Msg(OBJECT_REFERENCE)),
    r(3, "imagePullSecrets", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    f(4, "automountServiceAccountToken", Ty::Bool),
];

static CSR_SPEC: &[Field] = &[
    f(1, "request", Ty::Bytes),
    f(2, "username", Ty::Str),
    f(3, "uid", Ty::Str),
    r(4, "groups", Ty::Str),
    r(5, "usages", Ty::Str),
    f(6, "extra", Ty::MapExtra),
    f(7, "signerName", Ty::Str),
    f(8, "expirationSeconds", Ty::I32),
];

static CSR_CONDITION: &[Field] = &[
    f(1, "type", Ty::Str),
    f(2, "reason", Ty::Str),
    f(3, "message", Ty::Str),
    f(4, "lastUpdateTime", Ty::Time),
    f(5, "lastTransitionTime", Ty::Time),
    f(6, "status", Ty::Str),
];

static CSR_STATUS: &[Field] = &[
    r(1, "conditions", Ty::Msg(CSR_CONDITION)),
    f(2, "certificate", Ty::Bytes),
];

static CSR: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(CSR_SPEC)),
    f(3, "status", Ty::Msg(CSR_STATUS)),
];

static RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Ty::Str),
    f(2, "verb", Ty::Str),
    f(3, "group", Ty::Str),
    f(4, "version", Ty::Str),
    f(5, "resource", Ty::Str),
    f(6, "subresource", Ty::Str),
    f(7, "name", Ty::Str),
];

static NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Ty::Str), f(2, "verb", Ty::Str)];

static SAR_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
    f(3, "user", Ty::Str),
    r(4, "groups", Ty::Str),
    f(5, "extra", Ty::MapExtra),
    f(6, "uid", Ty::Str),
];

static SAR: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(SAR_SPEC)),
];

static SSAR_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
];

static SSAR: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(SSAR_SPEC)),
];

static SSR: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META))];

// k8s.io/api/authentication/v1 generated.proto.
static BOUND_OBJECT_REFERENCE: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "apiVersion", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
];

static TOKEN_REQUEST_SPEC: &[Field] = &[
    r(1, "audiences", Ty::Str),
    f(3, "boundObjectRef", Ty::Msg(BOUND_OBJECT_REFERENCE)),
    f(4, "expirationSeconds", Ty::I64),
];

static TOKEN_REQUEST: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(TOKEN_REQUEST_SPEC)),
];

static TOKEN_REVIEW_SPEC: &[Field] = &[f(1, "token", Ty::Str), r(2, "audiences", Ty::Str)];

static TOKEN_REVIEW: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(TOKEN_REVIEW_SPEC)),
];

static TYPE_META: &[Field] = &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)];

static UNKNOWN: &[Field] = &[f(1, "typeMeta", Ty::Msg(TYPE_META)), f(2, "raw", Ty::Bytes)];

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".to_owned())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("truncated field".to_owned());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

enum Raw<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Raw<'_>)>, String> {
    let mut rd = Reader { buf };
    let mut out = Vec::new();
    while !rd.buf.is_empty() {
        let tag = rd.varint()?;
        let raw = match tag & 7 {
            0 => Raw::Varint(rd.varint()?),
            1 => {
                rd.take(8)?;
                Raw::Fixed
            }
            2 => {
                let n = usize::try_from(rd.varint()?).map_err(|_| "length overflow")?;
                Raw::Len(rd.take(n)?)
            }
            5 => {
                rd.take(4)?;
                Raw::Fixed
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push((tag >> 3, raw));
    }
    Ok(out)
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in string field".to_owned())
}

fn time(b: &[u8]) -> Result<Value, String> {
    let mut secs = 0i64;
    for (num, raw) in fields(b)? {
        if let (1, Raw::Varint(v)) = (num, raw) {
            secs = v as i64;
        }
    }
    if secs == 0 {
        return Ok(Value::Null);
    }
    let ts = Timestamp::from_second(secs).map_err(|e| e.to_string())?;
    Ok(json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn map_entry(b: &[u8], depth: usize, ty: Ty) -> Result<(String, Value), String> {
    let extra = matches!(ty, Ty::MapExtra);
    let mut key = String::new();
    let mut value = if extra { json!([]) } else { json!("") };
    for (num, raw) in fields(b)? {
        match (num, raw) {
            (1, Raw::Len(k)) => key = string(k)?,
            (2, Raw::Len(v)) if matches!(ty, Ty::MapBytes) => {
                use base64::Engine as _;
                value = Value::String(base64::engine::general_purpose::STANDARD.encode(v));
            }
            (2, Raw::Len(v)) if extra => {
                let items: Vec<Value> = fields(v)?
                    .into_iter()
                    .filter_map(|(n, r)| match (n, r) {
                        (1, Raw::Len(s)) => Some(string(s).map(Value::String)),
                        _ => None,
                    })
                    .collect::<Result<_, _>>()?;
                let _ = depth;
                value = Value::Array(items);
            }
            (2, Raw::Len(v)) => value = Value::String(string(v)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn decode(buf: &[u8], schema: &[Field], depth: usize) -> Result<Map<String, Value>, String> {
    if depth > MAX_DEPTH {
        return Err("message nested too deeply".to_owned());
    }
    let mut out = Map::new();
    for (num, raw) in fields(buf)? {
        let Some(field) = schema.iter().find(|x| x.num == num) else {
            continue;
        };
        let value = match (field.ty, raw) {
            (Ty::Str, Raw::Len(b)) => Value::String(string(b)?),
            (Ty::Bytes, Raw::Len(b)) => {
                use base64::Engine as _;
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (Ty::I64, Raw::Varint(v)) => json!(v as i64),
            (Ty::I32, Raw::Varint(v)) => json!(v as i64 as i32),
            (Ty::Bool, Raw::Varint(v)) => json!(v != 0),
            (Ty::Time, Raw::Len(b)) => time(b)?,
            (Ty::Msg(s), Raw::Len(b)) => Value::Object(decode(b, s, depth + 1)?),
            (Ty::RawJson, Raw::Len(b)) => {
                let raw = fields(b)?
                    .into_iter()
                    .find_map(|(n, r)| match (n, r) {
                        (1, Raw::Len(x)) => Some(x),
                        _ => None,
                    })
                    .unwrap_or(b"{}");
                serde_json::from_slice(raw).map_err(|e| e.to_string())?
            }
            (Ty::MapStr | Ty::MapBytes | Ty::MapExtra, Raw::Len(b)) => {
                let (k, v) = map_entry(b, depth, field.ty)?;
                let slot = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = slot.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            _ => return Err(format!("field {} has an unexpected wire type", field.name)),
        };
        // gogo protobuf writes zero values that JSON omits (`omitempty`).
        let zero = match &value {
            Value::String(s) => s.is_empty(),
            Value::Number(n) => n.as_i64() == Some(0),
            Value::Bool(b) => !b,
            Value::Null => true,
            _ => false,
        };
        if zero && !field.repeated {
            continue;
        }
        if field.repeated {
            let slot = out
                .entry(field.name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(a) = slot.as_array_mut() {
                a.push(value);
            }
        } else {
            out.insert(field.name.to_owned(), value);
        }
    }
    Ok(out)
}

/// Decodes a protobuf-encoded object of one of the supported kinds into JSON.
pub fn decode_object(body: &[u8]) -> Result<Value, ApiError> {
    let bad = |e: String| ApiError::bad_request(format!("unable to decode protobuf body: {e}"));
    let payload = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s protobuf envelope".to_owned()))?;
    let envelope = decode(payload, UNKNOWN, 0).map_err(bad)?;
    let api_version = envelope
        .get("typeMeta")
        .and_then(|t| t.get("apiVersion"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = envelope
        .get("typeMeta")
        .and_then(|t| t.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let schema = match (api_version, kind) {
        ("certificates.k8s.io/v1", "CertificateSigningRequest") => CSR,
        ("authorization.k8s.io/v1", "SubjectAccessReview") => SAR,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SSAR,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => SSR,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("authentication.k8s.io/v1", "TokenReview") => TOKEN_REVIEW,
        ("v1", "Secret") => SECRET,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        _ => {
            return Err(ApiError::unsupported_media_type(&format!(
                "{CONTENT_TYPE} (the testbed decodes protobuf only for CertificateSigningRequest, access and token reviews, TokenRequest, Secret, ConfigMap and ServiceAccount; got {api_version}/{kind})"
            )));
        }
    };
    let raw = envelope.get("raw").and_then(Value::as_str).unwrap_or("");
    let raw = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|e| bad(e.to_string()))?
    };
    let mut obj = decode(&raw, schema, 0).map_err(bad)?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len_field(num: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    #[test]
    fn decodes_a_secret_with_binary_data_and_a_config_map() {
        let mut meta = Vec::new();
        len_field(1, b"s", &mut meta);
        let mut entry = Vec::new();
        len_field(1, b"bin", &mut entry);
        len_field(2, &[0, 0xff, 0x10], &mut entry);
        let mut text = Vec::new();
        len_field(1, b"t", &mut text);
        len_field(2, b"plain", &mut text);
        let mut secret = Vec::new();
        len_field(1, &meta, &mut secret);
        len_field(2, &entry, &mut secret);
        len_field(3, b"Opaque", &mut secret);
        len_field(4, &text, &mut secret);
        varint(5 << 3, &mut secret);
        varint(1, &mut secret);
        let envelope = |kind: &[u8], raw: &[u8]| {
            let mut tm = Vec::new();
            len_field(1, b"v1", &mut tm);
            len_field(2, kind, &mut tm);
            let mut body = MAGIC.to_vec();
            len_field(1, &tm, &mut body);
            len_field(2, raw, &mut body);
            body
        };
        let v = decode_object(&envelope(b"Secret", &secret)).expect("decodes");
        assert_eq!(v["kind"], "Secret");
        assert_eq!(v["data"]["bin"], "AP8Q");
        assert_eq!(v["stringData"]["t"], "plain");
        assert_eq!(v["type"], "Opaque");
        assert_eq!(v["immutable"], true);

        let mut cm = Vec::new();
        len_field(1, &meta, &mut cm);
        len_field(2, &text, &mut cm);
        len_field(3, &entry, &mut cm);
        let v = decode_object(&envelope(b"ConfigMap", &cm)).expect("decodes");
        assert_eq!(v["data"]["t"], "plain");
        assert_eq!(v["binaryData"]["bin"], "AP8Q");
    }

    #[test]
    fn decodes_a_token_request_as_kubectl_create_token_sends_it() {
        let mut bound = Vec::new();
        len_field(1, b"Pod", &mut bound);
        len_field(2, b"v1", &mut bound);
        len_field(3, b"p", &mut bound);
        let mut spec = Vec::new();
        len_field(1, b"aud-1", &mut spec);
        len_field(1, b"aud-2", &mut spec);
        len_field(3, &bound, &mut spec);
        varint(4 << 3, &mut spec);
        varint(7200, &mut spec);
        let mut meta = Vec::new();
        len_field(1, b"sa", &mut meta);
        let mut req = Vec::new();
        len_field(1, &meta, &mut req);
        len_field(2, &spec, &mut req);
        let mut tm = Vec::new();
        len_field(1, b"authentication.k8s.io/v1", &mut tm);
        len_field(2, b"TokenRequest", &mut tm);
        let mut body = MAGIC.to_vec();
        len_field(1, &tm, &mut body);
        len_field(2, &req, &mut body);
        let v = decode_object(&body).expect("decodes");
        assert_eq!(
            v,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "metadata": {"name": "sa"},
                   "spec": {"audiences": ["aud-1", "aud-2"], "expirationSeconds": 7200,
                            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p"}}})
        );
    }

    #[test]
    fn decodes_a_csr_envelope() {
        let mut time = Vec::new();
        varint(1 << 3, &mut time);
        varint(1_700_000_000, &mut time);
        let mut cond = Vec::new();
        len_field(1, b"Approved", &mut cond);
        len_field(6, b"True", &mut cond);
        len_field(4, &time, &mut cond);
        let mut status = Vec::new();
        len_field(1, &cond, &mut status);
        let mut meta = Vec::new();
        len_field(1, b"csr-1", &mut meta);
        let mut label = Vec::new();
        len_field(1, b"app", &mut label);
        len_field(2, b"x", &mut label);
        len_field(11, &label, &mut meta);
        let mut spec = Vec::new();
        len_field(5, b"server auth", &mut spec);
        len_field(5, b"digital signature", &mut spec);
        varint(8 << 3, &mut spec);
        varint(3600, &mut spec);
        let mut csr = Vec::new();
        len_field(1, &meta, &mut csr);
        len_field(2, &spec, &mut csr);
        len_field(3, &status, &mut csr);
        let mut tm = Vec::new();
        len_field(1, b"certificates.k8s.io/v1", &mut tm);
        len_field(2, b"CertificateSigningRequest", &mut tm);
        let mut body = MAGIC.to_vec();
        len_field(1, &tm, &mut body);
        len_field(2, &csr, &mut body);
        let v = decode_object(&body).expect("decodes");
        assert_eq!(v["metadata"]["name"], "csr-1");
        assert_eq!(v["metadata"]["labels"]["app"], "x");
        assert_eq!(
            v["spec"]["usages"],
            json!(["server auth", "digital signature"])
        );
        assert_eq!(v["spec"]["expirationSeconds"], 3600);
        assert_eq!(v["status"]["conditions"][0]["type"], "Approved");
        assert_eq!(
            v["status"]["conditions"][0]["lastUpdateTime"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(v["kind"], "CertificateSigningRequest");
        assert!(decode_object(b"k8s\x00\x0a\x05").is_err(), "truncated");
        assert!(decode_object(b"{}").is_err(), "not protobuf");
    }
}
