//! Bring-your-own certificate files (`--tls-cert`/`--tls-key`, e.g. a cert-manager Secret
//! mounted as a volume): loaded at start, read again on an interval, and a changed, valid
//! pair swapped in for new handshakes. A half-written or mismatched pair is skipped (the
//! current certificate stays) and tried again at the next interval.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::PkiError;
use super::resolver::{ServingCertificate, certified_key};
use crate::metrics::TlsMetrics;

/// Largest certificate or key file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The certificate and key files and what was last loaded from them.
pub struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    loaded: (Vec<u8>, Vec<u8>),
    serving: Arc<ServingCertificate>,
    metrics: TlsMetrics,
}

// === impl CertificateFiles ===

impl CertificateFiles {
    /// Loads the pair; fails when either file is unreadable or they do not match.
    pub fn load(cert: &Path, key: &Path, metrics: TlsMetrics) -> Result<Self, PkiError> {
        let loaded = (read(cert)?, read(key)?);
        let serving = ServingCertificate::new(certified_key(&loaded.0, &loaded.1)?);
        let files = Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded,
            serving,
            metrics,
        };
        files.record();
        tracing::info!(cert = %cert.display(), key = %key.display(),
            "serving certificate loaded from files; they are read again for changes");
        Ok(files)
    }

    /// The certificate the attestation server presents.
    pub fn serving(&self) -> &Arc<ServingCertificate> {
        &self.serving
    }

    /// Reads both files; swaps in a changed, valid pair. Returns whether it swapped.
    pub fn reload(&mut self) -> Result<bool, PkiError> {
        let now = (read(&self.cert)?, read(&self.key)?);
        if now == self.loaded {
            return Ok(false);
        }
        let key = certified_key(&now.0, &now.1)?;
        self.loaded = now;
        let swapped = self.serving.swap(key);
        self.record();
        if swapped {
            self.metrics.swaps.inc();
            tracing::info!(cert = %self.cert.display(),
                "new serving certificate in use for new connections; established ones keep theirs");
        }
        Ok(swapped)
    }

    /// Reloads every `interval` until `stop`; a failed reload is logged and counted, and
    /// the current certificate stays in use.
    pub async fn run(mut self, interval: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {
                    if let Err(error) = self.reload() {
                        self.metrics.refresh_failed(error.metric_label());
                        tracing::warn!(%error, "reloading the serving certificate files failed; keeping the current one");
                    }
                }
            }
        }
    }

    fn record(&self) {
        let not_after = self.serving.leaf().and_then(|der| {
            X509Certificate::from_der(&der)
                .ok()
                .map(|(_, c)| c.validity().not_after.timestamp())
        });
        if let Some(not_after) = not_after {
            self.metrics.serving_not_after.set(not_after);
        }
    }
}

impl std::fmt::Debug for CertificateFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    use std::io::Read as _;
    let io = |source| PkiError::File {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(PkiError::FileTooLarge(path.to_owned()));
    }
    Ok(bytes)
}
