//! CertificateSigningRequest rules of kube-apiserver: identity injection on
//! create, validation (request PEM and signature, usages, signerName,
//! expirationSeconds, conditions, certificate), and the update strategies of
//! the main resource and the `/status` and `/approval` subresources.

use base64::Engine as _;
use serde_json::{Value, json};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::auth::UserInfo;
use super::resources::Subresource;
use super::status::Cause;

/// The kubelet-serving signer.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// Usages kube-apiserver accepts.
pub const KNOWN_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

const APPROVAL_TYPES: &[&str] = &["Approved", "Denied"];
const SINGLETON_TYPES: &[&str] = &["Approved", "Denied", "Failed"];

/// A decoded `spec.request`: the PKCS#10 DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestDer(pub Vec<u8>);

fn b64(v: Option<&Value>) -> Option<Vec<u8>> {
    v.and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
}

/// Decodes and checks `spec.request`: one PEM `CERTIFICATE REQUEST` block whose
/// self-signature verifies. The error is the message kube-apiserver gives.
pub fn parse_request(csr: &Value) -> Result<RequestDer, String> {
    let der = request_der(csr)?;
    let (_, req) = X509CertificationRequest::from_der(&der.0)
        .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
    req.verify_signature()
        .map_err(|_| "x509: certificate request signature verification failed".to_owned())?;
    Ok(der)
}

/// Decodes `spec.request` to the PKCS#10 DER without verifying its signature (the caller
/// verifies it, or it was verified when the CSR was created).
pub fn request_der(csr: &Value) -> Result<RequestDer, String> {
    let bytes = b64(csr.pointer("/spec/request")).unwrap_or_default();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_owned())?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".to_owned());
    }
    Ok(RequestDer(pem.contents))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn conditions(csr: &Value) -> Vec<&Value> {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn cond_type(c: &Value) -> &str {
    c.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Whether a condition of this type is present (with status True).
pub fn has_condition(csr: &Value, ty: &str) -> bool {
    conditions(csr)
        .iter()
        .any(|c| cond_type(c) == ty && c.get("status").and_then(Value::as_str) == Some("True"))
}

/// Sets `spec.username/uid/groups/extra` from the requester and clears the status.
pub fn prepare_create(csr: &mut Value, user: &UserInfo) {
    if !csr.get("spec").is_some_and(Value::is_object) {
        csr["spec"] = json!({});
    }
    let spec = &mut csr["spec"];
    spec["username"] = json!(user.name);
    spec["groups"] = json!(user.groups);
    if let Some(m) = spec.as_object_mut() {
        if user.uid.is_empty() {
            m.remove("uid");
        } else {
            m.insert("uid".into(), json!(user.uid));
        }
        if user.extra.is_empty() {
            m.remove("extra");
        } else {
            m.insert("extra".into(), json!(user.extra));
        }
    }
    csr["status"] = json!({});
}

/// Validates a whole CSR (create and every update).
pub fn validate(csr: &Value) -> Vec<Cause> {
    validate_with(csr, true)
}

/// Like [`validate`]; `check_request` false skips decoding `spec.request` and verifying its
/// signature (for an update, whose spec the strategy copied from the stored object, which
/// passed this check when it was created: the result could not differ).
fn validate_with(csr: &Value, check_request: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    if check_request && let Err(e) = parse_request(csr) {
        causes.push(Cause::invalid("spec.request", "[]byte{...}", &e));
    }
    match csr.pointer("/spec/usages").and_then(Value::as_array) {
        None => causes.push(Cause::required("spec.usages", "usages must be provided")),
        Some(u) if u.is_empty() => {
            causes.push(Cause::required("spec.usages", "usages must be provided"))
        }
        Some(usages) => {
            let mut seen: Vec<&str> = Vec::new();
            for (i, u) in usages.iter().enumerate() {
                let s = u.as_str().unwrap_or("");
                if !KNOWN_USAGES.contains(&s) {
                    causes.push(Cause::unsupported(
                        format!("spec.usages[{i}]"),
                        &format!("{s:?}"),
                        KNOWN_USAGES,
                    ));
                } else if seen.contains(&s) {
                    causes.push(Cause::duplicate(
                        format!("spec.usages[{i}]"),
                        &format!("{s:?}"),
                    ));
                }
                seen.push(s);
            }
        }
    }
    match csr.pointer("/spec/signerName").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required("spec.signerName", "")),
        Some("kubernetes.io/legacy-unknown") => causes.push(Cause::invalid(
            "spec.signerName",
            "\"kubernetes.io/legacy-unknown\"",
            "the legacy signerName is not allowed via this API version",
        )),
        Some(s) => {
            let ok = s.split_once('/').is_some_and(|(domain, path)| {
                is_dns_subdomain(domain) && !path.is_empty() && path.len() <= 253
            });
            if !ok {
                causes.push(Cause::invalid(
                    "spec.signerName",
                    &format!("{s:?}"),
                    "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                ));
            }
        }
    }
    if let Some(secs) = csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        && secs < 600
    {
        causes.push(Cause::invalid(
            "spec.expirationSeconds",
            &secs.to_string(),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    causes.extend(validate_conditions(csr));
    if let Some(cert) = csr.pointer("/status/certificate")
        && cert.as_str().is_some_and(|s| !s.is_empty())
        && let Err(e) = validate_certificate(&b64(Some(cert)).unwrap_or_default())
    {
        causes.push(Cause::invalid(
            "status.certificate",
            "\"<certificate data>\"",
            &e,
        ));
    }
    causes
}

fn validate_conditions(csr: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conditions(csr).iter().enumerate() {
        let ty = cond_type(c);
        let status = c.get("status").and_then(Value::as_str).unwrap_or("");
        if ty.is_empty() {
            causes.push(Cause::required(format!("status.conditions[{i}].type"), ""));
            continue;
        }
        if SINGLETON_TYPES.contains(&ty) {
            if seen.contains(&ty) {
                causes.push(Cause::duplicate(
                    format!("status.conditions[{i}].type"),
                    &format!("{ty:?}"),
                ));
            }
            if status != "True" {
                causes.push(Cause::unsupported(
                    format!("status.conditions[{i}].status"),
                    &format!("{status:?}"),
                    &["True"],
                ));
            }
        } else if !matches!(status, "True" | "False" | "Unknown") {
            if status.is_empty() {
                causes.push(Cause::required(
                    format!("status.conditions[{i}].status"),
                    "",
                ));
            } else {
                causes.push(Cause::unsupported(
                    format!("status.conditions[{i}].status"),
                    &format!("{status:?}"),
                    &["False", "True", "Unknown"],
                ));
            }
        }
        if (ty == "Approved" && seen.contains(&"Denied"))
            || (ty == "Denied" && seen.contains(&"Approved"))
        {
            causes.push(Cause::invalid(
                format!("status.conditions[{i}].type"),
                &format!("{ty:?}"),
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
        seen.push(ty);
    }
    causes
}

fn validate_certificate(pem: &[u8]) -> Result<(), String> {
    let mut found = false;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("error decoding certificate data: {e}"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {:?}",
                block.label
            ));
        }
        X509Certificate::from_der(&block.contents)
            .map_err(|e| format!("x509: malformed certificate: {e}"))?;
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err("must contain at least one CERTIFICATE PEM block".to_owned())
    }
}

/// Validates an update after the strategy ran: conditions are never removed
/// and an issued certificate never changes.
pub fn validate_update(new: &Value, old: &Value) -> Vec<Cause> {
    let request = |v: &Value| v.pointer("/spec/request").cloned();
    let mut causes = validate_with(new, request(new) != request(old));
    for ty in SINGLETON_TYPES {
        if conditions(old).iter().any(|c| cond_type(c) == *ty)
            && !conditions(new).iter().any(|c| cond_type(c) == *ty)
        {
            causes.push(Cause::forbidden(
                "status.conditions",
                &format!("updates may not remove a condition of type {ty:?}"),
            ));
        }
    }
    let cert = |v: &Value| {
        v.pointer("/status/certificate")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (old_cert, new_cert) = (cert(old), cert(new));
    if !old_cert.is_empty() && old_cert != new_cert {
        causes.push(Cause::forbidden(
            "status.certificate",
            "updates may not modify existing certificate content",
        ));
    }
    causes
}

/// The update strategy: the main resource only changes metadata, `/status`
/// everything in status but the approval conditions, `/approval` only the
/// Approved/Denied conditions.
pub fn prepare_update(new: &mut Value, old: &Value, sub: Option<Subresource>, now: &str) {
    new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    let old_status = old.get("status").cloned().unwrap_or(json!({}));
    let new_conditions: Vec<Value> = conditions(new).into_iter().cloned().collect();
    let old_conditions: Vec<Value> = conditions(old).into_iter().cloned().collect();
    match sub {
        None => new["status"] = old_status,
        Some(Subresource::Status) => {
            if !new.get("status").is_some_and(Value::is_object) {
                new["status"] = json!({});
            }
            let mut merged: Vec<Value> = new_conditions
                .into_iter()
                .filter(|c| !APPROVAL_TYPES.contains(&cond_type(c)))
                .collect();
            merged.extend(
                old_conditions
                    .iter()
                    .filter(|c| APPROVAL_TYPES.contains(&cond_type(c)))
                    .cloned(),
            );
            new["status"]["conditions"] = Value::Array(merged);
        }
        Some(Subresource::Approval) => {
            let mut status = old_status;
            if !status.is_object() {
                status = json!({});
            }
            let mut merged: Vec<Value> = old_conditions
                .iter()
                .filter(|c| !APPROVAL_TYPES.contains(&cond_type(c)))
                .cloned()
                .collect();
            merged.extend(
                new_conditions
                    .into_iter()
                    .filter(|c| APPROVAL_TYPES.contains(&cond_type(c))),
            );
            status["conditions"] = Value::Array(merged);
            new["status"] = status;
        }
    }
    populate_condition_timestamps(new, old, now);
    if let Some(st) = new.get_mut("status").and_then(Value::as_object_mut)
        && st
            .get("conditions")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        st.remove("conditions");
    }
}

fn populate_condition_timestamps(new: &mut Value, old: &Value, now: &str) {
    let old_conditions: Vec<Value> = conditions(old).into_iter().cloned().collect();
    let Some(list) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in list {
        let Some(m) = c.as_object_mut() else { continue };
        if m.get("lastUpdateTime").is_none_or(Value::is_null) {
            m.insert("lastUpdateTime".into(), json!(now));
        }
        if m.get("lastTransitionTime").is_none_or(Value::is_null) {
            let ty = m.get("type").cloned();
            let status = m.get("status").cloned();
            let previous = old_conditions
                .iter()
                .find(|o| o.get("type") == ty.as_ref() && o.get("status") == status.as_ref())
                .and_then(|o| o.get("lastTransitionTime"))
                .filter(|t| !t.is_null())
                .cloned();
            m.insert(
                "lastTransitionTime".into(),
                previous.unwrap_or_else(|| json!(now)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubber_stamp_testkit::csr::CsrSpec;

    fn request_pem() -> String {
        CsrSpec::kubelet("n1", &["n1"], &[]).pem()
    }

    fn mk_csr(usages: Value, signer: &str) -> Value {
        let req = base64::engine::general_purpose::STANDARD.encode(request_pem());
        json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
               "metadata": {"name": "c"},
               "spec": {"request": req, "usages": usages, "signerName": signer}})
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn valid_request_passes_and_identity_is_injected() {
        let mut csr = mk_csr(json!(["digital signature", "server auth"]), KUBELET_SERVING);
        csr["spec"]["username"] = json!("forged");
        prepare_create(
            &mut csr,
            &UserInfo::new("system:node:n1", &["system:nodes"]),
        );
        assert_eq!(csr["spec"]["username"], "system:node:n1");
        assert_eq!(csr["spec"]["groups"], json!(["system:nodes"]));
        assert!(validate(&csr).is_empty(), "{:?}", validate(&csr));
    }

    #[test]
    fn invalid_fields_are_each_reported() {
        let mut csr = mk_csr(json!(["server auth", "bogus", "server auth"]), "nodomain");
        csr["spec"]["expirationSeconds"] = json!(599);
        csr["spec"]["request"] = json!(base64::engine::general_purpose::STANDARD.encode("not pem"));
        let causes = validate(&csr);
        assert_eq!(
            fields(&causes),
            [
                "spec.request",
                "spec.usages[1]",
                "spec.usages[2]",
                "spec.signerName",
                "spec.expirationSeconds"
            ]
        );
        let no_usages = mk_csr(json!([]), KUBELET_SERVING);
        assert_eq!(fields(&validate(&no_usages)), ["spec.usages"]);
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let pem = request_pem();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let mut der = block.contents.clone();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let b64der = base64::engine::general_purpose::STANDARD.encode(&der);
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{b64der}\n-----END CERTIFICATE REQUEST-----\n"
        );
        let mut csr = mk_csr(json!(["server auth"]), KUBELET_SERVING);
        csr["spec"]["request"] = json!(base64::engine::general_purpose::STANDARD.encode(tampered));
        assert!(parse_request(&csr).is_err());
    }

    #[test]
    fn approval_strategy_keeps_other_conditions_and_forbids_removal() {
        let mut old = mk_csr(json!(["server auth"]), KUBELET_SERVING);
        old["status"] = json!({"conditions": [{"type": "Approved", "status": "True", "lastTransitionTime": "t0"}]});
        let mut denied = old.clone();
        denied["status"]["conditions"] = json!([{"type": "Denied", "status": "True"}]);
        prepare_update(&mut denied, &old, Some(Subresource::Approval), "now");
        let causes = validate_update(&denied, &old);
        assert!(
            causes.iter().any(|c| c
                .message
                .contains("may not remove a condition of type \"Approved\"")),
            "{causes:?}"
        );

        let mut both = old.clone();
        both["status"]["conditions"] =
            json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]);
        prepare_update(&mut both, &old, Some(Subresource::Approval), "now");
        assert!(
            validate_update(&both, &old)
                .iter()
                .any(|c| c.message.contains("mutually exclusive"))
        );

        // /status cannot add approval conditions; main resource cannot touch status.
        let pending = mk_csr(json!(["server auth"]), KUBELET_SERVING);
        let mut sneaky = pending.clone();
        sneaky["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        prepare_update(&mut sneaky, &pending, Some(Subresource::Status), "now");
        assert!(!has_condition(&sneaky, "Approved"));
        let mut main = pending.clone();
        main["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        prepare_update(&mut main, &pending, None, "now");
        assert!(!has_condition(&main, "Approved"));
    }
}
