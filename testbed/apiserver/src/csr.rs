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

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `ValidateSignerName` (pkg/apis/certificates/validation): one `/`; a domain of at most
/// 253 characters made of DNS labels, with at least two of them; a path whose
/// `.`-separated parts are DNS subdomains; at most 571 characters in all.
pub fn validate_signer_name(signer: &str) -> Vec<Cause> {
    const FIELD: &str = "spec.signerName";
    const SUBDOMAIN: usize = 253;
    const MAX_LEN: usize = SUBDOMAIN + (SUBDOMAIN + 63 + 1) + 1;
    if signer.is_empty() {
        return vec![Cause::required(FIELD, "")];
    }
    let Some((domain, path)) = signer.split_once('/').filter(|(_, p)| !p.contains('/')) else {
        return vec![Cause::invalid(
            FIELD,
            &format!("{signer:?}"),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        )];
    };
    let mut causes = Vec::new();
    if domain.len() > SUBDOMAIN {
        causes.push(Cause::too_long(FIELD, SUBDOMAIN));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if let Some(bad) = labels.iter().find(|l| !is_dns_label(l)) {
        causes.push(Cause::invalid(
            FIELD,
            &format!("{domain:?}"),
            &format!("validating label {bad:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
        ));
    }
    if labels.len() < 2 {
        causes.push(Cause::invalid(
            FIELD,
            &format!("{domain:?}"),
            "should be a domain with at least two segments separated by dots",
        ));
    }
    if let Some(bad) = path.split('.').find(|l| !is_dns_subdomain(l)) {
        causes.push(Cause::invalid(
            FIELD,
            &format!("{path:?}"),
            &format!("validating label {bad:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    if signer.len() > MAX_LEN {
        causes.push(Cause::too_long(FIELD, MAX_LEN));
    }
    causes
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
    validate_with(csr, true, None)
}

/// Like [`validate`]; `check_request` false skips decoding `spec.request` and verifying its
/// signature (for an update, whose spec the strategy copied from the stored object, which
/// passed this check when it was created: the result could not differ). `old` is the stored
/// object of an update: what it already had does not fail the update.
fn validate_with(csr: &Value, check_request: bool, old: Option<&Value>) -> Vec<Cause> {
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
        Some("kubernetes.io/legacy-unknown") => causes.push(Cause::invalid(
            "spec.signerName",
            "\"kubernetes.io/legacy-unknown\"",
            "the legacy signerName is not allowed via this API version",
        )),
        signer => causes.extend(validate_signer_name(signer.unwrap_or(""))),
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
    causes.extend(validate_conditions(csr, old));
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

/// `validateConditions` with the options `getValidationOptions` derives from the stored
/// object: a type is required, and no type appears twice — of any type — unless the stored
/// object already had such conditions; Approved, Denied and Failed may only be `True`;
/// Approved and Denied exclude each other.
fn validate_conditions(csr: &Value, old: Option<&Value>) -> Vec<Cause> {
    let old_types: Vec<&str> = old
        .map(conditions)
        .unwrap_or_default()
        .into_iter()
        .map(cond_type)
        .collect();
    let allow_empty_type = old_types.contains(&"");
    let allow_duplicates = old_types
        .iter()
        .enumerate()
        .any(|(i, t)| old_types[..i].contains(t));
    let allow_both = old_types.contains(&"Approved") && old_types.contains(&"Denied");
    let mut causes = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conditions(csr).iter().enumerate() {
        let ty = cond_type(c);
        let status = c.get("status").and_then(Value::as_str).unwrap_or("");
        if ty.is_empty() && !allow_empty_type {
            causes.push(Cause::required(format!("status.conditions[{i}].type"), ""));
        }
        let allowed: &[&str] = if SINGLETON_TYPES.contains(&ty) {
            &["True"]
        } else {
            &["False", "True", "Unknown"]
        };
        if status.is_empty() {
            causes.push(Cause::required(
                format!("status.conditions[{i}].status"),
                "",
            ));
        } else if !allowed.contains(&status) {
            causes.push(Cause::unsupported(
                format!("status.conditions[{i}].status"),
                &format!("{status:?}"),
                allowed,
            ));
        }
        if !allow_both
            && ((ty == "Approved" && seen.contains(&"Denied"))
                || (ty == "Denied" && seen.contains(&"Approved")))
        {
            causes.push(Cause::invalid(
                format!("status.conditions[{i}].type"),
                &format!("{ty:?}"),
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
        if !allow_duplicates && seen.contains(&ty) {
            causes.push(Cause::duplicate(
                format!("status.conditions[{i}].type"),
                &format!("{ty:?}"),
            ));
        }
        seen.push(ty);
    }
    causes
}

/// Whether a PEM block carries headers (`Proc-Type: …` lines after its BEGIN line), which
/// `validateCertificate` refuses and a PEM parser skips silently.
fn pem_has_headers(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    let mut in_block = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            in_block = true;
        } else if line.starts_with("-----END ") {
            in_block = false;
        } else if in_block && line.contains(':') {
            return true;
        }
    }
    false
}

/// `validateCertificate`: one or more CERTIFICATE blocks, without headers, each a
/// certificate.
fn validate_certificate(pem: &[u8]) -> Result<(), String> {
    if pem_has_headers(pem) {
        return Err("no PEM block headers are permitted".to_owned());
    }
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

/// Validates an update after the strategy ran (`validateCertificateSigningRequestUpdate`):
/// Approved, Denied and Failed conditions are never removed; only `/approval` adds Approved
/// or Denied; an issued certificate never changes.
pub fn validate_update(new: &Value, old: &Value, sub: Option<Subresource>) -> Vec<Cause> {
    let request = |v: &Value| v.pointer("/spec/request").cloned();
    let mut causes = validate_with(new, request(new) != request(old), Some(old));
    let count = |csr: &Value, ty: &str| {
        conditions(csr)
            .iter()
            .filter(|c| cond_type(c) == ty)
            .count()
    };
    for ty in SINGLETON_TYPES {
        if count(new, ty) < count(old, ty) {
            causes.push(Cause::forbidden(
                "status.conditions",
                &format!("updates may not remove a condition of type {ty:?}"),
            ));
        }
    }
    if sub != Some(Subresource::Approval) {
        for ty in APPROVAL_TYPES {
            if count(new, ty) > count(old, ty) {
                causes.push(Cause::forbidden(
                    "status.conditions",
                    &format!("updates may not add a condition of type {ty:?}"),
                ));
            }
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

/// The update strategies (pkg/registry/certificates/certificates/strategy.go): the main
/// resource keeps the stored status; `/status` keeps the stored Approved and Denied
/// condition instances where their count did not change (`preserveConditionInstances`;
/// a changed count is left for validation to refuse); `/approval` takes the whole
/// condition list from the body and the rest of the status from the stored object.
pub fn prepare_update(new: &mut Value, old: &Value, sub: Option<Subresource>, now: &str) {
    new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    let mut old_status = old.get("status").cloned().unwrap_or(json!({}));
    if !old_status.is_object() {
        old_status = json!({});
    }
    let new_conditions: Vec<Value> = conditions(new).into_iter().cloned().collect();
    let old_conditions: Vec<Value> = conditions(old).into_iter().cloned().collect();
    match sub {
        // (CSRs serve no `/token`: that arm is the main resource's, for completeness.)
        None | Some(Subresource::Token) => new["status"] = old_status,
        Some(Subresource::Status) => {
            if !new.get("status").is_some_and(Value::is_object) {
                new["status"] = json!({});
            }
            let mut kept = new_conditions;
            for ty in APPROVAL_TYPES {
                let positions = |list: &[Value]| -> Vec<usize> {
                    (0..list.len())
                        .filter(|&i| cond_type(&list[i]) == *ty)
                        .collect()
                };
                let (at_old, at_new) = (positions(&old_conditions), positions(&kept));
                if at_old.len() == at_new.len() {
                    for (o, n) in at_old.into_iter().zip(at_new) {
                        kept[n] = old_conditions[o].clone();
                    }
                }
            }
            new["status"]["conditions"] = Value::Array(kept);
        }
        Some(Subresource::Approval) => {
            let mut status = old_status;
            status["conditions"] = Value::Array(new_conditions);
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
    fn approval_takes_the_whole_condition_list_and_forbids_removal() {
        // csrApprovalStrategy.PrepareForUpdate + validateCertificateSigningRequestUpdate.
        let mut old = mk_csr(json!(["server auth"]), KUBELET_SERVING);
        old["status"] = json!({"conditions": [
            {"type": "Approved", "status": "True", "lastTransitionTime": "t0"},
            {"type": "Custom", "status": "True"}]});
        let mut denied = old.clone();
        denied["status"]["conditions"] = json!([{"type": "Denied", "status": "True"}]);
        prepare_update(&mut denied, &old, Some(Subresource::Approval), "now");
        assert_eq!(
            conditions(&denied).len(),
            1,
            "the body's list replaces the stored one"
        );
        let causes = validate_update(&denied, &old, Some(Subresource::Approval));
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
            validate_update(&both, &old, Some(Subresource::Approval))
                .iter()
                .any(|c| c.message.contains("mutually exclusive"))
        );
    }

    #[test]
    fn status_may_not_add_approval_and_the_main_resource_keeps_the_status() {
        // csrStatusStrategy: preserveConditionInstances, then "updates may not add".
        let pending = mk_csr(json!(["server auth"]), KUBELET_SERVING);
        let mut sneaky = pending.clone();
        sneaky["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        prepare_update(&mut sneaky, &pending, Some(Subresource::Status), "now");
        let causes = validate_update(&sneaky, &pending, Some(Subresource::Status));
        assert!(
            causes.iter().any(|c| c
                .message
                .contains("may not add a condition of type \"Approved\"")),
            "{causes:?}"
        );
        // A stored approval is kept as it was, whatever the body says of it.
        let mut approved = pending.clone();
        approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True", "reason": "R", "lastTransitionTime": "t0", "lastUpdateTime": "t0"}]});
        let mut rewritten = approved.clone();
        rewritten["status"]["conditions"][0]["reason"] = json!("Other");
        prepare_update(&mut rewritten, &approved, Some(Subresource::Status), "now");
        assert_eq!(rewritten["status"]["conditions"][0]["reason"], "R");
        assert!(validate_update(&rewritten, &approved, Some(Subresource::Status)).is_empty());

        let mut main = pending.clone();
        main["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        prepare_update(&mut main, &pending, None, "now");
        assert!(!has_condition(&main, "Approved"));
    }

    #[test]
    fn duplicate_conditions_of_any_type_are_refused_unless_already_stored() {
        // validateConditions with getValidationOptions.
        let mut csr = mk_csr(json!(["server auth"]), KUBELET_SERVING);
        csr["status"] = json!({"conditions": [
            {"type": "Custom", "status": "True"}, {"type": "Custom", "status": "False"},
            {"type": "Failed", "status": "False"}]});
        assert_eq!(
            fields(&validate(&csr)),
            ["status.conditions[1].type", "status.conditions[2].status"]
        );
        let mut same = csr.clone();
        same["status"]["conditions"][2]["status"] = json!("True");
        assert!(validate_update(&same, &csr, Some(Subresource::Status)).is_empty());
    }

    #[test]
    fn signer_names_are_validated_as_validate_signer_name_does() {
        for ok in [
            "kubernetes.io/kubelet-serving",
            "example.com/a.b-c",
            "a.b/c",
        ] {
            assert!(validate_signer_name(ok).is_empty(), "{ok}");
        }
        let bad = [
            ("", "Required value"),
            (
                "kubelet-serving",
                "must be a fully qualified domain and path",
            ),
            ("a/b/c", "must be a fully qualified domain and path"),
            ("example/x", "at least two segments"),
            ("Example.com/x", "validating label \"Example\""),
            ("example.com/", "validating label \"\""),
            ("example.com/UPPER", "validating label \"UPPER\""),
        ];
        for (signer, expected) in bad {
            let causes = validate_signer_name(signer);
            assert!(
                causes.iter().any(|c| c.message.contains(expected)),
                "{signer:?}: {causes:?}"
            );
        }
        let long = format!("{}.com/x", "a.".repeat(130));
        assert!(
            validate_signer_name(&long)
                .iter()
                .any(|c| c.reason == "FieldValueTooLong")
        );
    }

    #[test]
    fn certificate_pem_with_headers_is_refused() {
        // validateCertificate: "no PEM block headers are permitted".
        let pem = b"-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            validate_certificate(pem),
            Err("no PEM block headers are permitted".to_owned())
        );
    }
}
