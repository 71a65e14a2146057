//! Reading the documents the command line takes (CSR, Nodes, Services, ServiceCIDRs,
//! attestations, policy) from files or stdin, bounded in size, into checked types.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use serde::de::DeserializeOwned;

use rubber_stamp_core::{AttestationSnapshot, Policy, PolicyError};

/// Largest CSR document read (`kubectl get csr -o yaml` of a 64 KiB request is ~90 KiB).
pub const MAX_CSR_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Largest `kubectl get nodes -o json` document read.
pub const MAX_NODES_DOCUMENT_BYTES: u64 = 512 * 1024 * 1024;
/// Largest `kubectl get services -A -o json` (or ServiceCIDR list) document read.
pub const MAX_SERVICES_DOCUMENT_BYTES: u64 = 512 * 1024 * 1024;
/// Largest attestation snapshot read.
pub const MAX_ATTESTATIONS_DOCUMENT_BYTES: u64 = 256 * 1024 * 1024;
/// Largest policy file read.
pub const MAX_POLICY_DOCUMENT_BYTES: u64 = 1024 * 1024;

/// Why an input could not be used. Every variant names the input and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Opening or reading failed.
    #[error("cannot read the {what} from {origin}: {source}")]
    Read {
        /// Which input.
        what: &'static str,
        /// The path, or `stdin`.
        origin: String,
        /// The I/O error.
        source: io::Error,
    },
    /// More bytes than the limit.
    #[error("the {what} in {origin} is larger than {limit} bytes")]
    TooLarge {
        /// Which input.
        what: &'static str,
        /// The path, or `stdin`.
        origin: String,
        /// The limit.
        limit: u64,
    },
    /// Not UTF-8.
    #[error("the {what} in {origin} is not UTF-8 text")]
    NotText {
        /// Which input.
        what: &'static str,
        /// The path, or `stdin`.
        origin: String,
    },
    /// Not the expected document.
    #[error("the {what} in {origin} is not usable: {message}")]
    Invalid {
        /// Which input.
        what: &'static str,
        /// The path, or `stdin`.
        origin: String,
        /// What is wrong, in plain words.
        message: String,
    },
    /// The policy parsed but is invalid, or did not parse.
    #[error("the policy in {origin}: {source}")]
    Policy {
        /// The path.
        origin: String,
        /// The policy error.
        source: PolicyError,
    },
}

/// Reads a whole file (or stdin for `-`) as UTF-8, refusing more than `limit` bytes.
pub fn read_text(path: &Path, what: &'static str, limit: u64) -> Result<String, InputError> {
    let origin = origin_of(path);
    let read_err = |source| InputError::Read {
        what,
        origin: origin.clone(),
        source,
    };
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        io::stdin()
            .lock()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
    } else {
        File::open(path)
            .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
            .map_err(read_err)?;
    }
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLarge {
            what,
            origin,
            limit,
        });
    }
    String::from_utf8(bytes).map_err(|_| InputError::NotText { what, origin })
}

fn origin_of(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Parses a JSON document (when it starts with `{` or `[`) or else a YAML one.
pub fn parse_document<T: DeserializeOwned>(
    text: &str,
    what: &'static str,
    origin: &str,
) -> Result<T, InputError> {
    let invalid = |message: String| InputError::Invalid {
        what,
        origin: origin.to_owned(),
        message,
    };
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if trimmed.is_empty() {
        return Err(invalid("the document is empty".to_owned()));
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| invalid(format!("JSON: {e}")))
    } else {
        serde_yaml::from_str(trimmed).map_err(|e| invalid(format!("YAML: {e}")))
    }
}

fn kind_of(doc: &serde_json::Value) -> Option<&str> {
    doc.get("kind").and_then(serde_json::Value::as_str)
}

/// A CertificateSigningRequest as `kubectl get csr NAME -o yaml|json` prints it.
pub fn csr_document(text: &str, origin: &str) -> Result<CertificateSigningRequest, InputError> {
    const WHAT: &str = "CertificateSigningRequest";
    let invalid = |message: String| InputError::Invalid {
        what: WHAT,
        origin: origin.to_owned(),
        message,
    };
    let doc: serde_json::Value = parse_document(text, WHAT, origin)?;
    if !doc.is_object() {
        return Err(invalid(
            "expected one object, as printed by `kubectl get csr NAME -o yaml`".to_owned(),
        ));
    }
    match kind_of(&doc) {
        Some("CertificateSigningRequest") => {}
        Some(kind) if kind.ends_with("List") => {
            return Err(invalid(format!(
                "it is a {kind}; pass a single CSR (`kubectl get csr NAME -o yaml`)"
            )));
        }
        Some(kind) => {
            return Err(invalid(format!(
                "its kind is {kind:?}, not CertificateSigningRequest"
            )));
        }
        None => {
            return Err(invalid(
                "it has no `kind: CertificateSigningRequest`; pass `kubectl get csr NAME -o yaml` output"
                    .to_owned(),
            ));
        }
    }
    if !doc.get("spec").is_some_and(serde_json::Value::is_object) {
        return Err(invalid("it has no spec".to_owned()));
    }
    serde_json::from_value(doc).map_err(|e| invalid(e.to_string()))
}

/// Nodes from `kubectl get nodes -o json|yaml` (a List), or a single Node.
pub fn nodes_document(text: &str, origin: &str) -> Result<Vec<Node>, InputError> {
    list_document(
        text,
        origin,
        "Node list",
        "Node",
        "kubectl get nodes -o json",
    )
}

/// Services from `kubectl get services -A -o json|yaml` (a List), or a single Service.
pub fn services_document(text: &str, origin: &str) -> Result<Vec<Service>, InputError> {
    list_document(
        text,
        origin,
        "Service list",
        "Service",
        "kubectl get services -A -o json",
    )
}

/// ServiceCIDRs from `kubectl get servicecidrs -o json|yaml` (a List), or a single one.
pub fn service_cidrs_document(text: &str, origin: &str) -> Result<Vec<ServiceCIDR>, InputError> {
    list_document(
        text,
        origin,
        "ServiceCIDR list",
        "ServiceCIDR",
        "kubectl get servicecidrs -o json",
    )
}

/// Objects of `kind` from a List (`items`) or a single object of that kind.
fn list_document<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    what: &'static str,
    kind: &str,
    command: &str,
) -> Result<Vec<T>, InputError> {
    let invalid = |message: String| InputError::Invalid {
        what,
        origin: origin.to_owned(),
        message,
    };
    let mut doc: serde_json::Value = parse_document(text, what, origin)?;
    if kind_of(&doc) == Some(kind) {
        return serde_json::from_value(doc)
            .map(|n| vec![n])
            .map_err(|e| invalid(e.to_string()));
    }
    let Some(items) = doc.get_mut("items").map(serde_json::Value::take) else {
        return Err(invalid(format!(
            "expected `{command}` output (an object with `items`)"
        )));
    };
    let serde_json::Value::Array(items) = items else {
        return Err(invalid("`items` is not a list".to_owned()));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value(item).map_err(|e| invalid(format!("items[{i}]: {e}")))
        })
        .collect()
}

/// The attestation snapshot (`{"attestations": [...]}`).
pub fn attestations_document(text: &str, origin: &str) -> Result<AttestationSnapshot, InputError> {
    parse_document(text, "attestation snapshot", origin)
}

/// Reads and validates a policy file (the same file `check` and `run` take).
pub fn read_policy(path: &Path) -> Result<Policy, InputError> {
    let text = read_text(path, "policy", MAX_POLICY_DOCUMENT_BYTES)?;
    Policy::from_yaml(&text).map_err(|source| InputError::Policy {
        origin: origin_of(path),
        source,
    })
}

/// Reads a document with [`read_text`] and parses it with `parse`.
pub fn read_document<T>(
    path: &Path,
    what: &'static str,
    limit: u64,
    parse: impl FnOnce(&str, &str) -> Result<T, InputError>,
) -> Result<T, InputError> {
    let text = read_text(path, what, limit)?;
    parse(&text, &origin_of(path))
}
