//! The PKI kept in a Secret, through the Kubernetes API. The first replica creates the CA and
//! serving certificate (create, and on `409 AlreadyExists` read what the winner wrote); every
//! replica reads the Secret again on an interval, carries out what the [plan](super::plan)
//! says is due (writes carry the resourceVersion they read, so of two replicas renewing at
//! once one wins and the other adopts its result), publishes the CA bundle in the ConfigMap
//! the agents mount, and swaps a renewed certificate into the [`ServingCertificate`].
//!
//! API calls, all in the approver's namespace and on the two configured names: Secret `get`,
//! `create`, `update`, `delete`; ConfigMap `get`, `create`, `update` — exactly what `deploy/`
//! grants. `delete` serves one case: a Secret of ours whose `type` is not
//! `kubernetes.io/tls` (made by hand, or by a tool that left the type to its default,
//! `Opaque`). A Secret's type cannot change in place (kube-apiserver answers an update with
//! 422 "field is immutable"), so that Secret is deleted — only that object, only as it was
//! read (uid and resourceVersion preconditions) — and created again with the right type,
//! keeping its CA and certificate when they are usable.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use tokio_util::sync::CancellationToken;

use super::PkiError;
use super::config::PkiConfig;
use super::plan::Step;
use super::resolver::{ServingCertificate, certified_key};
use super::state::{BUNDLE, PkiState, StateError};
use crate::metrics::TlsMetrics;
use crate::store::Clock;

/// The label (and value) marking the Secret and ConfigMap as the approver's own; objects of
/// those names without it are never overwritten.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "rubber-stamp-approver");

/// How many write conflicts one pass tolerates before it gives up until the next pass.
const MAX_CONFLICTS: usize = 5;

/// How this replica came by the Secret at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// It created the Secret (or replaced an unusable one).
    Created,
    /// The Secret existed.
    Adopted,
    /// Another replica created it between our read and our create; we read theirs.
    Raced,
}

/// The Secret and ConfigMap, and how to read and write them.
#[derive(Clone)]
struct TlsObjects {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    config: PkiConfig,
    names: Vec<String>,
    clock: Arc<dyn Clock>,
}

/// What the Secret holds.
enum Stored {
    Missing,
    Usable {
        state: Box<PkiState>,
        version: String,
        retype: Option<Retype>,
    },
    Unusable {
        version: String,
        reason: StateError,
        retype: Option<Retype>,
    },
}

/// A Secret of ours whose type is not [`SECRET_TYPE`]: it must be deleted and created again.
#[derive(Debug)]
struct Retype {
    uid: String,
    found: String,
}

/// The type of the Secret the approver writes.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";

/// The approver's CA and serving certificate, kept in a Secret and served through a
/// swappable [`ServingCertificate`].
pub struct SecretPki {
    objects: TlsObjects,
    serving: Arc<ServingCertificate>,
    metrics: TlsMetrics,
}

// === impl SecretPki ===

impl SecretPki {
    /// Gets or creates the Secret, renews whatever is due, publishes the bundle and loads
    /// the serving certificate. One attempt: the caller retries transient errors.
    pub async fn bootstrap(
        client: kube::Client,
        config: PkiConfig,
        clock: Arc<dyn Clock>,
        metrics: TlsMetrics,
    ) -> Result<(Self, Bootstrap), PkiError> {
        let objects = TlsObjects {
            secrets: Api::namespaced(client.clone(), &config.namespace),
            config_maps: Api::namespaced(client, &config.namespace),
            names: config.dns_names(),
            config,
            clock,
        };
        let (state, version, how) = objects.load().await?;
        let state = objects.reconcile(state, version).await?;
        let serving = ServingCertificate::new(serving_key(&state)?);
        let pki = Self {
            objects,
            serving,
            metrics,
        };
        pki.record(&state);
        tracing::info!(
            secret = %pki.objects.secret_ref(),
            ?how,
            serial = %state.serving.info.serial,
            not_after = %state.serving.info.not_after,
            ca_not_after = %state.ca.info.not_after,
            "serving certificate loaded from the TLS Secret"
        );
        Ok((pki, how))
    }

    /// The certificate the attestation server presents.
    pub fn serving(&self) -> &Arc<ServingCertificate> {
        &self.serving
    }

    /// One pass: read the Secret, renew what is due, publish the bundle, and serve the
    /// Secret's certificate from the next handshake on. Returns whether it changed.
    pub async fn refresh(&self) -> Result<bool, PkiError> {
        let (state, version, _) = self.objects.load().await?;
        let state = self.objects.reconcile(state, version).await?;
        let swapped = self.serving.swap(serving_key(&state)?);
        self.record(&state);
        if swapped {
            self.metrics.swaps.inc();
            tracing::info!(
                serial = %state.serving.info.serial,
                not_after = %state.serving.info.not_after,
                "new serving certificate in use for new connections; established ones keep theirs"
            );
        }
        Ok(swapped)
    }

    /// Refreshes every interval until `stop`. A failed refresh is logged and counted; the
    /// current certificate stays in use and the next interval tries again.
    pub async fn run(self, stop: CancellationToken) {
        let interval = self.objects.config.refresh_interval;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {
                    if let Err(error) = self.refresh().await {
                        self.metrics.refresh_failed(error.metric_label());
                        tracing::warn!(%error, secret = %self.objects.secret_ref(),
                            "refreshing the serving certificate failed; keeping the current one");
                    }
                }
            }
        }
    }

    fn record(&self, state: &PkiState) {
        self.metrics
            .serving_not_after
            .set(state.serving.info.not_after.as_second());
        self.metrics
            .ca_not_after
            .set(state.ca.info.not_after.as_second());
    }
}

impl std::fmt::Debug for SecretPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretPki")
            .field("secret", &self.objects.secret_ref())
            .field("serving", &self.serving)
            .finish_non_exhaustive()
    }
}

fn serving_key(state: &PkiState) -> Result<rustls::sign::CertifiedKey, PkiError> {
    Ok(certified_key(
        state.serving.cert_pem.as_bytes(),
        state.serving.key_pem.as_bytes(),
    )?)
}

// === impl TlsObjects ===

impl TlsObjects {
    fn secret_ref(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.secret)
    }

    fn config_map_ref(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.config_map)
    }

    /// The stored state, created when missing and replaced when unusable.
    async fn load(&self) -> Result<(PkiState, String, Bootstrap), PkiError> {
        let mut raced = false;
        for _ in 0..MAX_CONFLICTS {
            match self.read().await? {
                Stored::Usable {
                    state,
                    version,
                    retype: Some(retype),
                } => {
                    tracing::warn!(secret = %self.secret_ref(), found = %retype.found,
                        "the TLS Secret's type is not kubernetes.io/tls and cannot be changed in place; creating it again with the same CA and certificate");
                    if let Some(version) = self.recreate(&state, &retype, &version).await? {
                        return Ok((*state, version, Bootstrap::Adopted));
                    }
                    raced = true;
                }
                Stored::Usable {
                    state,
                    version,
                    retype: None,
                } => {
                    let state = *state;
                    let how = if raced {
                        Bootstrap::Raced
                    } else {
                        Bootstrap::Adopted
                    };
                    return Ok((state, version, how));
                }
                Stored::Missing => {
                    let state = self.fresh()?;
                    match self.create(&state).await? {
                        Some(version) => {
                            tracing::info!(secret = %self.secret_ref(), serial = %state.serving.info.serial,
                                "created the approver CA and serving certificate");
                            return Ok((state, version, Bootstrap::Created));
                        }
                        None => raced = true,
                    }
                }
                Stored::Unusable {
                    version,
                    reason,
                    retype,
                } => {
                    tracing::warn!(secret = %self.secret_ref(), %reason,
                        "the TLS Secret is unusable; replacing it with a new CA and certificate");
                    let state = self.fresh()?;
                    let written = match &retype {
                        Some(retype) => self.recreate(&state, retype, &version).await?,
                        None => self.replace(&state, &version).await?,
                    };
                    if let Some(version) = written {
                        return Ok((state, version, Bootstrap::Created));
                    }
                }
            }
        }
        Err(PkiError::Conflicts(self.secret_ref()))
    }

    /// Carries out the due steps and publishes the bundle; returns the state now stored.
    async fn reconcile(
        &self,
        mut state: PkiState,
        mut version: String,
    ) -> Result<PkiState, PkiError> {
        let schedule = self.config.schedule;
        'pass: for _ in 0..MAX_CONFLICTS {
            let now = self.clock.now();
            if let Some((advanced, steps)) = state.advance(now, &schedule, &self.names)? {
                match self.replace(&advanced, &version).await? {
                    Some(v) => {
                        log_steps(&self.secret_ref(), &steps, &advanced);
                        state = advanced;
                        version = v;
                    }
                    None => {
                        (state, version, _) = self.load().await?;
                        continue 'pass;
                    }
                }
            }
            self.publish(&state.bundle()).await?;
            if state.awaits_publication() {
                let mut marked = state.clone();
                marked.mark_published(now);
                match self.replace(&marked, &version).await? {
                    Some(_) => {
                        tracing::info!(secret = %self.secret_ref(), configmap = %self.config_map_ref(),
                            "CA bundle with the successor CA published; it signs after the propagation delay");
                        state = marked;
                    }
                    None => {
                        (state, version, _) = self.load().await?;
                        continue 'pass;
                    }
                }
            }
            return Ok(state);
        }
        Err(PkiError::Conflicts(self.secret_ref()))
    }

    fn fresh(&self) -> Result<PkiState, PkiError> {
        Ok(PkiState::fresh(
            self.clock.now(),
            &self.config.schedule,
            &self.names,
        )?)
    }

    async fn read(&self) -> Result<Stored, PkiError> {
        let secret = self
            .secrets
            .get_opt(&self.config.secret)
            .await
            .map_err(|source| self.kube_error("get", "Secret", source))?;
        let Some(secret) = secret else {
            return Ok(Stored::Missing);
        };
        if !managed(&secret.metadata) {
            return Err(PkiError::Foreign {
                kind: "Secret",
                object: self.secret_ref(),
            });
        }
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        let found = secret.type_.clone().unwrap_or_default();
        let retype = (found != SECRET_TYPE).then(|| Retype {
            uid: secret.metadata.uid.clone().unwrap_or_default(),
            found,
        });
        let data = secret.data.unwrap_or_default();
        Ok(match PkiState::from_data(&data) {
            Ok(state) => Stored::Usable {
                state: Box::new(state),
                version,
                retype,
            },
            Err(reason) => Stored::Unusable {
                version,
                reason,
                retype,
            },
        })
    }

    fn secret(&self, state: &PkiState, version: Option<&str>) -> Secret {
        Secret {
            metadata: self.metadata(&self.config.secret, version),
            type_: Some(SECRET_TYPE.to_owned()),
            data: Some(state.to_data()),
            ..Secret::default()
        }
    }

    /// `Some(resourceVersion)` when created, `None` when another replica was first.
    async fn create(&self, state: &PkiState) -> Result<Option<String>, PkiError> {
        match self
            .secrets
            .create(&PostParams::default(), &self.secret(state, None))
            .await
        {
            Ok(created) => Ok(Some(created.metadata.resource_version.unwrap_or_default())),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(source) => Err(self.kube_error("create", "Secret", source)),
        }
    }

    /// `Some(resourceVersion)` when written, `None` when the Secret changed since `version`.
    async fn replace(&self, state: &PkiState, version: &str) -> Result<Option<String>, PkiError> {
        match self
            .secrets
            .replace(
                &self.config.secret,
                &PostParams::default(),
                &self.secret(state, Some(version)),
            )
            .await
        {
            Ok(written) => Ok(Some(written.metadata.resource_version.unwrap_or_default())),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(source) => Err(self.kube_error("update", "Secret", source)),
        }
    }

    /// Deletes the Secret read at `version` (only that object, only unchanged since) and
    /// creates it with `state` and the right type. `Some(resourceVersion)` when created;
    /// `None` when the Secret changed or went meanwhile, or another replica created it
    /// first (the caller reads again).
    async fn recreate(
        &self,
        state: &PkiState,
        retype: &Retype,
        version: &str,
    ) -> Result<Option<String>, PkiError> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(retype.uid.clone()),
                resource_version: Some(version.to_owned()),
            }),
            ..DeleteParams::default()
        };
        match self.secrets.delete(&self.config.secret, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                return Ok(None);
            }
            Err(source) => return Err(self.kube_error("delete", "Secret", source)),
        }
        self.create(state).await
    }

    /// Makes the ConfigMap hold exactly `bundle`.
    async fn publish(&self, bundle: &str) -> Result<(), PkiError> {
        let name = &self.config.config_map;
        for _ in 0..MAX_CONFLICTS {
            let current = self
                .config_maps
                .get_opt(name)
                .await
                .map_err(|source| self.kube_error("get", "ConfigMap", source))?;
            let version = match current {
                Some(cm) if !managed(&cm.metadata) => {
                    return Err(PkiError::Foreign {
                        kind: "ConfigMap",
                        object: self.config_map_ref(),
                    });
                }
                Some(cm) => {
                    let published = cm.data.as_ref().and_then(|d| d.get(BUNDLE));
                    if published.map(String::as_str) == Some(bundle) {
                        return Ok(());
                    }
                    Some(cm.metadata.resource_version.unwrap_or_default())
                }
                None => None,
            };
            let config_map = ConfigMap {
                metadata: self.metadata(name, version.as_deref()),
                data: Some(BTreeMap::from([(BUNDLE.to_owned(), bundle.to_owned())])),
                ..ConfigMap::default()
            };
            let written = match &version {
                None => self
                    .config_maps
                    .create(&PostParams::default(), &config_map)
                    .await
                    .map_err(|e| ("create", e)),
                Some(_) => self
                    .config_maps
                    .replace(name, &PostParams::default(), &config_map)
                    .await
                    .map_err(|e| ("update", e)),
            };
            match written {
                Ok(_) => {
                    tracing::info!(configmap = %self.config_map_ref(),
                        certificates = bundle.matches("BEGIN CERTIFICATE").count(),
                        "CA bundle published");
                    return Ok(());
                }
                Err((_, kube::Error::Api(status))) if status.code == 409 => {}
                Err((verb, source)) => return Err(self.kube_error(verb, "ConfigMap", source)),
            }
        }
        Err(PkiError::Conflicts(self.config_map_ref()))
    }

    fn metadata(&self, name: &str, version: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.config.namespace.clone()),
            resource_version: version.map(str::to_owned),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                (
                    "app.kubernetes.io/part-of".to_owned(),
                    "kubelet-rubber-stamp".to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        }
    }

    fn kube_error(&self, verb: &'static str, kind: &'static str, source: kube::Error) -> PkiError {
        let object = match kind {
            "Secret" => self.secret_ref(),
            _ => self.config_map_ref(),
        };
        PkiError::Kube {
            verb,
            kind,
            object,
            source: Box::new(source),
        }
    }
}

fn managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1)
}

fn log_steps(secret: &str, steps: &[Step], state: &PkiState) {
    for step in steps {
        match step {
            Step::ReplaceExpiredCa => tracing::warn!(%secret,
                "the approver CA had expired; replaced it without overlap (agents reconnect once the new bundle reaches them)"),
            Step::DropPreviousCa => {
                tracing::info!(%secret, "the previous CA expired; dropped it from the bundle")
            }
            Step::StartCaRotation => {
                tracing::info!(%secret, ca_not_after = %state.ca.info.not_after,
                "CA rotation started: successor CA generated, to be published next to the current one")
            }
            Step::PromoteNextCa => {
                tracing::info!(%secret, "successor CA promoted; the old one stays in the bundle until it expires")
            }
            Step::IssueServing(reason) => tracing::info!(%secret, reason = reason.label(),
                serial = %state.serving.info.serial, not_after = %state.serving.info.not_after,
                "serving certificate issued"),
        }
    }
}
