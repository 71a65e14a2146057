//! The kubelet simulator: a node's serving-certificate bootstrap exactly as
//! a kubelet with `serverTLSBootstrap: true` does it, then HTTPS with the
//! issued certificate.
//!
//! The `kubelet-sim` binary strings these together: [`NodeIdentity`] →
//! [`ServingRequest`] (key + CSR, pure) → [`request_certificate`] (the only
//! API server traffic: create + watch) → [`verify_issued`] → [`CertDir`] →
//! [`serve`].
//!
//! # Layout
//!
//! - `identity`: [`NodeIdentity`], hostname and address discovery (sysinfo).
//! - `request`: [`ServingRequest`], the CSR object, [`csr_state`].
//! - `apiserver`: [`client`], [`request_certificate`].
//! - `certificate`: [`verify_issued`], [`ServingCertificate`], [`CertDir`].
//! - `serve`: [`serve`], the HTTPS port (`/healthz`).
//! - `error`: [`KubeletError`] and the binary's exit codes.

mod apiserver;
mod certificate;
mod error;
mod identity;
mod request;
mod serve;

pub use apiserver::{ApiServerConfig, Progress, WaitLimits, client, request_certificate};
pub use certificate::{CURRENT_FILE, CertDir, LeafFacts, ServingCertificate, verify_issued};
pub use error::{EXIT_DENIED, EXIT_ERROR, EXIT_FAILED, EXIT_MISMATCH, EXIT_TIMEOUT, KubeletError};
pub use identity::{NodeIdentity, discover_ips, system_hostname};
pub use request::{
    CsrState, ECDSA_SERVING_USAGES, GENERATE_NAME, KUBELET_SERVING_SIGNER, MIN_EXPIRATION_SECONDS,
    ServingRequest, csr_state,
};
pub use serve::{DEFAULT_PORT, HANDSHAKE_TIMEOUT, MAX_CONNECTIONS, serve};
