//! The only part of the simulator that talks to the API server, with plain
//! kube-rs calls so it works against any conformant server: create the CSR
//! (`Api::create`, retried while the server is unreachable), then watch it
//! by name (`kube::runtime::watcher`, which re-lists and re-watches after
//! drops, restarts and `410 Gone`) until it is issued, denied or failed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::KubeletError;
use super::request::{CsrState, csr_state};

/// Where the API server is and who we are to it.
#[derive(Clone, Debug)]
pub enum ApiServerConfig {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// A URL, the CA bundle that verifies the server, and the node's client
    /// certificate and key (may be one combined file, as the kubelet keeps
    /// `kubelet-client-current.pem`).
    Direct {
        /// `https://host:port`.
        server: http::Uri,
        /// PEM CA bundle.
        ca_file: PathBuf,
        /// PEM client certificate (the first CERTIFICATE blocks are used).
        client_cert: PathBuf,
        /// PEM private key (the first key block is used).
        client_key: PathBuf,
    },
}

/// How long and how loudly to wait.
#[derive(Clone, Copy, Debug)]
pub struct WaitLimits {
    /// How often to report that the CSR is still pending.
    pub status_interval: Duration,
    /// Give up after this long without a certificate (`None`: never).
    pub timeout: Option<Duration>,
    /// The longest pause between attempts to create the CSR.
    pub create_max_delay: Duration,
}

impl Default for WaitLimits {
    fn default() -> Self {
        Self {
            status_interval: Duration::from_secs(10),
            timeout: None,
            create_max_delay: Duration::from_secs(30),
        }
    }
}

/// What happened while asking, for status lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Creating failed in a way worth retrying.
    CreateRetry {
        /// The error.
        error: String,
        /// When the next attempt is.
        retry_in: Duration,
    },
    /// The CSR exists.
    Created {
        /// Its name.
        name: String,
    },
    /// It is approved; the signer has not issued yet.
    Approved {
        /// Its name.
        name: String,
    },
    /// Still no decision.
    StillPending {
        /// Its name.
        name: String,
        /// Time since creation.
        waited: Duration,
    },
    /// The watch failed; the watcher retries with backoff.
    WatchError {
        /// Its name.
        name: String,
        /// The error.
        error: String,
    },
}

/// A client for `config`. Reads files, does not connect.
pub async fn client(config: &ApiServerConfig) -> Result<Client, KubeletError> {
    let config = match config {
        ApiServerConfig::Kubeconfig(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| KubeletError::ClientConfig(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| KubeletError::ClientConfig(format!("{}: {e}", path.display())))?
        }
        ApiServerConfig::Direct {
            server,
            ca_file,
            client_cert,
            client_key,
        } => direct_config(server, ca_file, client_cert, client_key)?,
    };
    Client::try_from(config).map_err(|e| KubeletError::ClientConfig(e.to_string()))
}

fn direct_config(
    server: &http::Uri,
    ca_file: &Path,
    client_cert: &Path,
    client_key: &Path,
) -> Result<Config, KubeletError> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let pem_err = |path: &Path, detail: String| KubeletError::Pem {
        path: path.to_owned(),
        detail,
    };

    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| KubeletError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, KubeletError> {
        let certs = CertificateDer::pem_slice_iter(&read(path)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(path, e.to_string()))?;
        if certs.is_empty() {
            return Err(pem_err(path, "no CERTIFICATE block".into()));
        }
        Ok(certs)
    };
    let ca = certs(ca_file)?;
    let client_chain = certs(client_cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(client_key)?)
        .map_err(|e| pem_err(client_key, format!("no usable private key: {e}")))?;
    let key_label = match &key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let cert_pem: String = client_chain
        .iter()
        .map(|c| super::certificate::pem_block("CERTIFICATE", c))
        .collect();
    let key_pem = super::certificate::pem_block(key_label, key.secret_der());
    // AuthInfo's data fields hold base64 of PEM, as in a kubeconfig file.
    let auth_info: AuthInfo = serde_json::from_value(serde_json::json!({
        "client-certificate-data": b64(cert_pem.as_bytes()),
        "client-key-data": b64(key_pem.as_bytes()),
    }))
    .map_err(|e| KubeletError::ClientConfig(e.to_string()))?;
    let mut config = Config::new(server.clone());
    config.root_cert = Some(ca.into_iter().map(|c| c.to_vec()).collect());
    config.auth_info = auth_info;
    Ok(config)
}

/// Creates `csr` and waits until it is issued; returns `status.certificate`.
/// Creation is retried (capped exponential backoff with jitter) while the
/// server is unreachable or answers 429/5xx; a 4xx answer is final. Denied,
/// Failed, deleted and timed-out CSRs are errors.
pub async fn request_certificate(
    client: Client,
    csr: &CertificateSigningRequest,
    limits: WaitLimits,
    mut report: impl FnMut(Progress),
) -> Result<String, KubeletError> {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let started = Instant::now();
    // One deadline for creating and waiting.
    let deadline = limits.timeout.map(|t| started + t);
    let timeout = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    let timed_out = |name: &str| KubeletError::Timeout {
        name: name.to_owned(),
        seconds: limits.timeout.map_or(0, |t| t.as_secs()),
    };
    let create = (|| async { api.create(&PostParams::default(), csr).await })
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(limits.create_max_delay)
                .with_jitter()
                .without_max_times(),
        )
        .when(retryable)
        .notify(|e, retry_in| {
            report(Progress::CreateRetry {
                error: chain(e),
                retry_in,
            })
        });
    let created = tokio::select! {
        created = create => created?,
        () = &mut timeout => return Err(timed_out("(not created)")),
    };
    let name = created.name_any();
    report(Progress::Created { name: name.clone() });

    let mut ticks = tokio::time::interval_at(
        (Instant::now() + limits.status_interval).into(),
        limits.status_interval,
    );
    let stream = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff();
    tokio::pin!(stream);
    let mut approved_reported = false;
    let mut seen_since_init = false;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = ticks.tick() => {
                report(Progress::StillPending { name: name.clone(), waited: started.elapsed() });
                continue;
            }
            () = &mut timeout => return Err(timed_out(&name)),
        };
        let object = match event {
            None => return Err(KubeletError::WatchEnded { name }),
            Some(Err(e)) => {
                report(Progress::WatchError {
                    name: name.clone(),
                    error: chain(&e),
                });
                continue;
            }
            Some(Ok(watcher::Event::Init)) => {
                seen_since_init = false;
                continue;
            }
            Some(Ok(watcher::Event::InitDone)) => {
                if !seen_since_init {
                    return Err(KubeletError::Deleted { name });
                }
                continue;
            }
            Some(Ok(watcher::Event::Delete(_))) => return Err(KubeletError::Deleted { name }),
            Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => o,
        };
        seen_since_init = true;
        match csr_state(&object) {
            CsrState::Issued { certificate_pem } => return Ok(certificate_pem),
            CsrState::Denied { reason, message } => {
                return Err(KubeletError::Denied {
                    name,
                    reason,
                    message,
                });
            }
            CsrState::Failed { reason, message } => {
                return Err(KubeletError::Failed {
                    name,
                    reason,
                    message,
                });
            }
            CsrState::Pending { approved } => {
                if approved && !approved_reported {
                    approved_reported = true;
                    report(Progress::Approved { name: name.clone() });
                }
            }
        }
    }
}

/// An error with its sources, `outer: inner: innermost`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Whether creating may succeed if tried again: the server was unreachable,
/// overloaded or failing (429, 5xx). Authorisation and validation errors are
/// final.
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}
