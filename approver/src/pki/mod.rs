//! The attestation port's serving certificate, without extra tools: either the approver keeps
//! its own CA and a certificate for the headless Service's names in a Secret (first replica
//! creates, every replica renews, the CA bundle is published in a ConfigMap the agents
//! mount), or it is brought as files (e.g. from cert-manager) and reloaded when they change.
//! Either way rustls asks a swappable [`ServingCertificate`] on every handshake, so a renewed
//! certificate is used for new connections while established agent streams continue.
//!
//! - [`resolver`]: [`ServingCertificate`], rustls' `ResolvesServerCert` with a swap.
//! - [`authority`]: rcgen: new CAs and serving certificates; reading certificates back.
//! - [`plan`]: the pure renewal schedule (what is due when), CA rotation with overlap.
//! - [`state`]: the Secret's contents as checked types.
//! - [`secret`]: [`SecretPki`], the Secret and ConfigMap through the Kubernetes API.
//! - [`files`]: [`CertificateFiles`], bring-your-own files polled for changes.
//! - [`config`]: the flags.

pub mod authority;
pub mod config;
pub mod files;
pub mod plan;
pub mod resolver;
pub mod secret;
pub mod state;

use std::path::PathBuf;

pub use config::{PkiConfig, PkiConfigError};
pub use files::CertificateFiles;

pub use resolver::{KeyError, ServingCertificate, certified_key};
pub use secret::{Bootstrap, MANAGED_BY, SecretPki};

/// Why the serving certificate could not be loaded, created or renewed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A Kubernetes API call failed.
    #[error("{verb} {kind} {object}: {source}")]
    Kube {
        /// The verb (`get`, `create`, `update`).
        verb: &'static str,
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// `namespace/name`.
        object: String,
        /// What the client or the API server said.
        source: Box<kube::Error>,
    },
    /// An object of the configured name exists but the approver did not create it.
    #[error(
        "{kind} {object} exists but is not labelled {}={}: the approver does not overwrite it; \
         delete it, or give the approver another name, or bring your own certificate with \
         --tls-cert/--tls-key",
        MANAGED_BY.0, MANAGED_BY.1
    )]
    Foreign {
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// `namespace/name`.
        object: String,
    },
    /// Other replicas kept changing the object while this one tried to write it.
    #[error("{0}: gave up after repeated write conflicts; the next refresh tries again")]
    Conflicts(String),
    /// A certificate could not be generated or read.
    #[error(transparent)]
    Authority(#[from] authority::AuthorityError),
    /// rustls cannot serve the certificate and key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A certificate file could not be read.
    #[error("reading {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A certificate file is larger than any certificate file should be.
    #[error("{0} is larger than 1 MiB")]
    FileTooLarge(PathBuf),
}

// === impl PkiError ===

impl PkiError {
    /// Whether trying again later may succeed: API errors that are transient (connection
    /// failures, 429, 5xx, and 403 while RBAC objects applied together with the Deployment
    /// are still propagating) and write conflicts.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => {
                    matches!(status.code, 403 | 408 | 429) || status.code >= 500
                }
                _ => true,
            },
            Self::Conflicts(_) | Self::File { .. } => true,
            Self::Foreign { .. } | Self::Authority(_) | Self::Key(_) | Self::FileTooLarge(_) => {
                false
            }
        }
    }

    /// A short label for the `reason` of `rubber_stamp_tls_refresh_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(status) if status.code == 403 => "forbidden",
                kube::Error::Api(_) => "api_error",
                _ => "api_unreachable",
            },
            Self::Foreign { .. } => "foreign_object",
            Self::Conflicts(_) => "conflicts",
            Self::Authority(_) => "certificate",
            Self::Key(_) => "key_mismatch",
            Self::File { .. } | Self::FileTooLarge(_) => "file",
        }
    }

    /// The HTTP status of an API error, if this is one.
    pub fn api_status(&self) -> Option<u16> {
        match self {
            Self::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            _ => None,
        }
    }
}
