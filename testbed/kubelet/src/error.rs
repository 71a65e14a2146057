//! Errors of the kubelet simulator, each with the exit code the binary uses.

use std::path::PathBuf;

/// Everything that can stop the kubelet simulator.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// A node name, hostname or address that a kubelet would not use.
    #[error("invalid {what} {value:?}: {reason}")]
    Identity {
        /// Which field.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Generating the key or the CSR failed.
    #[error("generating the key or CSR: {0}")]
    Generate(#[from] rcgen::Error),
    /// The API server denied the CSR (a `Denied` condition).
    #[error("CSR {name} was denied: {reason}: {message}")]
    Denied {
        /// The CSR's name.
        name: String,
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The signer could not issue the certificate (a `Failed` condition).
    #[error("CSR {name} failed: {reason}: {message}")]
    Failed {
        /// The CSR's name.
        name: String,
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The CSR was deleted before a certificate was issued.
    #[error("CSR {name} was deleted while waiting for its certificate")]
    Deleted {
        /// The CSR's name.
        name: String,
    },
    /// The issued certificate is not the one asked for (wrong key, names,
    /// addresses) or cannot be used.
    #[error("issued certificate unusable: {0}")]
    Mismatch(String),
    /// No certificate within the configured time.
    #[error("no certificate for CSR {name} within {seconds} s")]
    Timeout {
        /// The CSR's name.
        name: String,
        /// The configured limit.
        seconds: u64,
    },
    /// Talking to the API server failed in a way retrying cannot fix.
    #[error("API server: {0}")]
    Api(#[from] kube::Error),
    /// The client configuration (kubeconfig, certificate files) is unusable.
    #[error("client configuration: {0}")]
    ClientConfig(String),
    /// The watch stream ended (it should not: the watcher re-watches).
    #[error("the watch on CSR {name} ended")]
    WatchEnded {
        /// The CSR's name.
        name: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that should hold PEM does not hold what it should.
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Building the TLS server configuration failed.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Binding or accepting on the serving port failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Exit code: the CSR was denied.
pub const EXIT_DENIED: u8 = 3;
/// Exit code: the CSR failed (the signer refused to issue).
pub const EXIT_FAILED: u8 = 4;
/// Exit code: the issued certificate does not match the key or the request.
pub const EXIT_MISMATCH: u8 = 5;
/// Exit code: no certificate within `--timeout`.
pub const EXIT_TIMEOUT: u8 = 6;
/// Exit code: anything else (configuration, API errors that retrying cannot
/// fix, I/O). Usage errors exit with 2 (clap).
pub const EXIT_ERROR: u8 = 1;

impl KubeletError {
    /// The process exit code this error ends the simulator with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Denied { .. } => EXIT_DENIED,
            Self::Failed { .. } => EXIT_FAILED,
            Self::Mismatch(_) => EXIT_MISMATCH,
            Self::Timeout { .. } => EXIT_TIMEOUT,
            _ => EXIT_ERROR,
        }
    }
}
