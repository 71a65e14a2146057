//! The in-cluster signer, like kube-controller-manager's csrsigning controller
//! for `kubernetes.io/kubelet-serving`: it reacts to every CSR change, checks
//! Approved requests against Kubernetes' kubelet-serving rules and either
//! issues a certificate from the cluster CA into `status.certificate` or sets
//! a `Failed` condition.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateSigningRequestDer;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::csr::{self, KUBELET_SERVING};
use super::managed;
use super::now_rfc3339;
use super::resources::{ids, kind};
use super::store::{ChangeType, ObjectKey, Store, StoreError};
use rubber_stamp_testkit::pki::Ca;

/// The field manager the signer writes as.
pub const SIGNER_MANAGER: &str = "kube-controller-manager";

/// What the signer decided for one CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A PEM certificate.
    Issued(String),
    /// Why the request violates the signer's rules.
    Failed(String),
}

/// The signer's configuration.
#[derive(Clone, Debug)]
pub struct SignerConfig {
    /// Longest certificate lifetime (kube-controller-manager's `--cluster-signing-duration`, default a year).
    pub max_duration: Duration,
}

impl Default for SignerConfig {
    fn default() -> Self {
        Self {
            max_duration: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

fn usages(csr: &Value) -> Vec<String> {
    csr.pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| {
            u.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Kubernetes' kubelet-serving validation (`ValidateKubeletServingCSR`).
pub fn validate_kubelet_serving(der: &[u8], usages: &[String]) -> Result<(), String> {
    let (_, req) =
        X509CertificationRequest::from_der(der).map_err(|e| format!("unable to parse csr: {e}"))?;
    let subject = &req.certification_request_info.subject;
    let orgs: Vec<&str> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .collect();
    if orgs != ["system:nodes"] {
        return Err("subject organization is not system:nodes".to_owned());
    }
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("");
    if !cn.starts_with("system:node:") {
        return Err("subject common name does not begin with 'system:node:'".to_owned());
    }
    let (mut dns_or_ip, mut email, mut uri) = (false, false, false);
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(_) | GeneralName::IPAddress(_) => dns_or_ip = true,
                    GeneralName::RFC822Name(_) => email = true,
                    GeneralName::URI(_) => uri = true,
                    _ => {}
                }
            }
        }
    }
    if !dns_or_ip {
        return Err("DNS or IP subjectAltName is required".to_owned());
    }
    if email {
        return Err("Email subjectAltNames are not allowed".to_owned());
    }
    if uri {
        return Err("URI subjectAltNames are not allowed".to_owned());
    }
    let mut set: Vec<&str> = usages.iter().map(String::as_str).collect();
    set.sort_unstable();
    set.dedup();
    let with_rsa = ["digital signature", "key encipherment", "server auth"];
    let without_rsa = ["digital signature", "server auth"];
    if set != with_rsa && set != without_rsa {
        return Err(format!("usages did not match [{}]", with_rsa.join(" ")));
    }
    Ok(())
}

/// Issues a certificate for a DER request, with the usages and lifetime the CSR asks for.
pub fn issue(ca: &Ca, der: &[u8], usages: &[String], lifetime: Duration) -> Result<String, String> {
    let mut req =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
            .map_err(|e| format!("unable to parse csr: {e}"))?;
    let p = &mut req.params;
    p.key_usages = Vec::new();
    p.extended_key_usages = Vec::new();
    for u in usages {
        match u.as_str() {
            "signing" | "digital signature" => p.key_usages.push(KeyUsagePurpose::DigitalSignature),
            "content commitment" => p.key_usages.push(KeyUsagePurpose::ContentCommitment),
            "key encipherment" => p.key_usages.push(KeyUsagePurpose::KeyEncipherment),
            "key agreement" => p.key_usages.push(KeyUsagePurpose::KeyAgreement),
            "data encipherment" => p.key_usages.push(KeyUsagePurpose::DataEncipherment),
            "cert sign" => p.key_usages.push(KeyUsagePurpose::KeyCertSign),
            "crl sign" => p.key_usages.push(KeyUsagePurpose::CrlSign),
            "encipher only" => p.key_usages.push(KeyUsagePurpose::EncipherOnly),
            "decipher only" => p.key_usages.push(KeyUsagePurpose::DecipherOnly),
            "any" => p.extended_key_usages.push(ExtendedKeyUsagePurpose::Any),
            "server auth" => p
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth),
            "client auth" => p
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth),
            "code signing" => p
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::CodeSigning),
            "email protection" => p
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::EmailProtection),
            "timestamping" => p
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::TimeStamping),
            "ocsp signing" => p
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::OcspSigning),
            other => return Err(format!("unsupported key usage: {other}")),
        }
    }
    p.is_ca = IsCa::ExplicitNoCa;
    p.use_authority_key_identifier_extension = true;
    let serial: [u8; 16] = rand::random();
    let mut serial = serial.to_vec();
    serial[0] &= 0x7f;
    p.serial_number = Some(SerialNumber::from(serial));
    let now = time::OffsetDateTime::now_utc();
    let backdate = time::Duration::minutes(5);
    p.not_before = now - backdate;
    p.not_after = now + time::Duration::try_from(lifetime).map_err(|e| e.to_string())?;
    let cert = req
        .signed_by(ca.issuer())
        .map_err(|e| format!("signing: {e}"))?;
    Ok(cert.pem())
}

/// What the signer does with a CSR now: `None` if it is not its business.
pub fn decide(ca: &Ca, config: &SignerConfig, csr: &Value) -> Option<Outcome> {
    if csr.pointer("/spec/signerName").and_then(Value::as_str) != Some(KUBELET_SERVING)
        || !csr::has_condition(csr, "Approved")
        || csr::has_condition(csr, "Denied")
        || csr::has_condition(csr, "Failed")
        || csr
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty())
    {
        return None;
    }
    // The API server verified the request's signature when the CSR was created (its spec
    // is immutable); `issue` verifies it once more, as kube-controller-manager's signer
    // does before signing.
    let der = match csr::request_der(csr) {
        Ok(d) => d.0,
        Err(e) => return Some(Outcome::Failed(e)),
    };
    let usages = usages(csr);
    if let Err(e) = validate_kubelet_serving(&der, &usages) {
        return Some(Outcome::Failed(e));
    }
    let mut lifetime = config.max_duration;
    if let Some(secs) = csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
    {
        lifetime = lifetime.min(Duration::from_secs(secs.max(600)));
    }
    Some(match issue(ca, &der, &usages, lifetime) {
        Ok(pem) => Outcome::Issued(pem),
        Err(e) => Outcome::Failed(e),
    })
}

fn apply_outcome(csr: &mut Value, outcome: &Outcome, now: &str) {
    if !csr.get("status").is_some_and(Value::is_object) {
        csr["status"] = json!({});
    }
    match outcome {
        Outcome::Issued(pem) => {
            use base64::Engine as _;
            csr["status"]["certificate"] =
                json!(base64::engine::general_purpose::STANDARD.encode(pem));
        }
        Outcome::Failed(message) => {
            let cond = json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                              "message": message, "lastUpdateTime": now, "lastTransitionTime": now});
            match csr["status"]
                .get_mut("conditions")
                .and_then(Value::as_array_mut)
            {
                Some(list) => list.push(cond),
                None => csr["status"]["conditions"] = json!([cond]),
            }
        }
    }
}

fn handle(store: &Store, ca: &Ca, config: &SignerConfig, key: &ObjectKey) {
    let id = ids::csrs();
    for _ in 0..8 {
        let Some(current) = store.get(id, key) else {
            return;
        };
        let Ok(old) = current.value() else { return };
        let Some(outcome) = decide(ca, config, &old) else {
            return;
        };
        let now = now_rfc3339();
        let mut new = old.clone();
        apply_outcome(&mut new, &outcome, &now);
        managed::track_update(
            kind(id),
            Some(&old),
            &mut new,
            SIGNER_MANAGER,
            "status",
            &now,
        );
        match store.update(id, key, current.rv, new) {
            Ok(_) => {
                tracing::debug!(csr = %key.name, ?outcome, "signer");
                return;
            }
            Err(StoreError::Conflict) => continue,
            Err(_) => return,
        }
    }
}

fn scan(store: &Store, ca: &Ca, config: &SignerConfig) {
    let page = store.list(ids::csrs(), None, None, None, |_, _| true);
    for obj in page.items {
        if let Ok(v) = obj.value() {
            let name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            handle(store, ca, config, &ObjectKey::new("", name));
        }
    }
}

/// Whether a committed CSR may need the signer: a kubelet-serving request that is
/// approved and neither denied, failed nor issued. Read from the committed JSON without
/// building a `Value`, since most changes (creations, the signer's own writes) do not.
fn concerns_signer(json: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Glance {
        #[serde(default)]
        spec: Spec,
        #[serde(default)]
        status: Status,
    }
    #[derive(Default, serde::Deserialize)]
    struct Spec {
        #[serde(default, rename = "signerName")]
        signer_name: String,
    }
    #[derive(Default, serde::Deserialize)]
    struct Status {
        #[serde(default)]
        conditions: Vec<Condition>,
        #[serde(default)]
        certificate: String,
    }
    #[derive(serde::Deserialize)]
    struct Condition {
        #[serde(default, rename = "type")]
        type_: String,
    }
    // Anything unexpected is looked at the slow way.
    let Ok(csr) = serde_json::from_slice::<Glance>(json) else {
        return true;
    };
    let has = |ty: &str| csr.status.conditions.iter().any(|c| c.type_ == ty);
    csr.spec.signer_name == KUBELET_SERVING
        && has("Approved")
        && !has("Denied")
        && !has("Failed")
        && csr.status.certificate.is_empty()
}

/// Runs the signer until `shutdown`.
pub async fn run(
    store: Arc<Store>,
    ca: Arc<Ca>,
    config: SignerConfig,
    shutdown: CancellationToken,
) {
    let mut rx = store.subscribe(ids::csrs());
    scan(&store, &ca, &config);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = rx.recv() => match r {
                Ok(change) if change.kind != ChangeType::Deleted
                    && concerns_signer(&change.object.json) => handle(&store, &ca, &config, &change.key),
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => scan(&store, &ca, &config),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::SanType;
    use rubber_stamp_testkit::csr::CsrSpec;
    use x509_parser::prelude::X509Certificate;

    fn request(cn: &str, org: &str, sans: Vec<SanType>) -> Vec<u8> {
        CsrSpec {
            cn: Some(cn.to_owned()),
            org: Some(org.to_owned()),
            sans,
            ..CsrSpec::default()
        }
        .der()
    }

    fn u(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_approved_unissued_kubelet_serving_requests_concern_the_signer() {
        let csr = |signer: &str, conditions: &[&str], certificate: &str| {
            let conditions: Vec<Value> = conditions
                .iter()
                .map(|t| json!({"type": t, "status": "True"}))
                .collect();
            serde_json::to_vec(&json!({
                "spec": {"signerName": signer, "request": "…"},
                "status": {"conditions": conditions, "certificate": certificate},
            }))
            .expect("json")
        };
        assert!(concerns_signer(&csr(KUBELET_SERVING, &["Approved"], "")));
        assert!(!concerns_signer(&csr(KUBELET_SERVING, &[], "")));
        assert!(!concerns_signer(&csr(
            KUBELET_SERVING,
            &["Approved"],
            "LS0t"
        )));
        assert!(!concerns_signer(&csr(
            KUBELET_SERVING,
            &["Approved", "Failed"],
            ""
        )));
        assert!(!concerns_signer(&csr(KUBELET_SERVING, &["Denied"], "")));
        assert!(!concerns_signer(&csr(
            "example.com/other",
            &["Approved"],
            ""
        )));
        assert!(concerns_signer(b"not json"), "the slow path decides");
    }

    #[test]
    fn kubelet_serving_rules() {
        let ip = SanType::IpAddress("10.0.0.1".parse().expect("ip"));
        let good = request("system:node:n1", "system:nodes", vec![ip.clone()]);
        let usages = u(&["digital signature", "server auth"]);
        assert_eq!(validate_kubelet_serving(&good, &usages), Ok(()));
        assert_eq!(
            validate_kubelet_serving(
                &good,
                &u(&["key encipherment", "digital signature", "server auth"])
            ),
            Ok(())
        );
        assert_eq!(
            validate_kubelet_serving(&good, &u(&["digital signature", "client auth"])),
            Err("usages did not match [digital signature key encipherment server auth]".into())
        );
        let bad_org = request("system:node:n1", "system:masters", vec![ip.clone()]);
        assert_eq!(
            validate_kubelet_serving(&bad_org, &usages),
            Err("subject organization is not system:nodes".into())
        );
        let bad_cn = request("n1", "system:nodes", vec![ip]);
        assert!(validate_kubelet_serving(&bad_cn, &usages).is_err());
        let no_san = request("system:node:n1", "system:nodes", vec![]);
        assert_eq!(
            validate_kubelet_serving(&no_san, &usages),
            Err("DNS or IP subjectAltName is required".into())
        );
        let email = request(
            "system:node:n1",
            "system:nodes",
            vec![
                SanType::DnsName("n1".try_into().expect("dns")),
                SanType::Rfc822Name("a@b.c".try_into().expect("mail")),
            ],
        );
        assert_eq!(
            validate_kubelet_serving(&email, &usages),
            Err("Email subjectAltNames are not allowed".into())
        );
    }

    #[test]
    fn issued_certificate_honours_lifetime_usages_and_chains_to_the_ca() {
        let ca = Ca::new("cluster-ca").expect("ca");
        let der = request(
            "system:node:n1",
            "system:nodes",
            vec![SanType::DnsName("n1".try_into().expect("dns"))],
        );
        let pem = issue(
            &ca,
            &der,
            &u(&["digital signature", "server auth"]),
            Duration::from_secs(600),
        )
        .expect("issue");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let (_, cert) = X509Certificate::from_der(&block.contents).expect("cert");
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 600 + 300, "ten minutes plus the five-minute backdate");
        let eku = cert.extended_key_usage().expect("ok").expect("eku").value;
        assert!(eku.server_auth && !eku.client_auth);
        let ca_block = x509_parser::pem::parse_x509_pem(ca.cert_pem().as_bytes())
            .expect("ca pem")
            .1;
        let (_, ca_cert) = X509Certificate::from_der(&ca_block.contents).expect("ca");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the cluster CA");
        assert_eq!(
            cert.subject().to_string(),
            "O=system:nodes, CN=system:node:n1"
        );
    }
}
