//! The live cluster, read as the user: the kubeconfig as kubectl reads it, the user's bearer
//! token (for the approver's admin port), and every object `explain` and `status` read —
//! each call bounded by `--request-timeout`, a 403 named with the verb and resource.

use std::future::{Future, Ready, ready};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{ListParams, PostParams};
use kube::client::ConfigExt as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use rubber_stamp_core::{
    AccessReview, CsrInput, KUBELET_SERVING_SIGNER, Listing, NodeSet, ServiceSet,
};
use serde::de::DeserializeOwned;

use super::PluginError;
use super::flags::GlobalArgs;
use crate::controller::review;
use crate::k8s;

/// Objects per page of a list.
const PAGE: u32 = 500;
/// The API group of CertificateSigningRequests.
const CSR_GROUP: &str = "certificates.k8s.io";

/// A client of the user's, and how long each call may take.
#[derive(Clone)]
pub struct Session {
    /// The API server, as the user.
    pub client: Client,
    /// The user's bearer token, if the kubeconfig has one (token, token file, exec or auth
    /// provider plugin); `Err` says why there is none.
    pub token: Result<String, String>,
    /// `--request-timeout`.
    pub timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The kubeconfig kubectl would use with these flags: `--kubeconfig` (else
    /// `KUBECONFIG`, `~/.kube/config`, in-cluster), `--context`, `--cluster`, `--user`.
    pub async fn connect(global: &GlobalArgs) -> Result<Self, PluginError> {
        let options = KubeConfigOptions {
            context: global.context.clone(),
            cluster: global.cluster.clone(),
            user: global.user.clone(),
        };
        let chosen =
            options.context.is_some() || options.cluster.is_some() || options.user.is_some();
        let config = match &global.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| PluginError::Kubeconfig(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| PluginError::Kubeconfig(format!("{}: {e}", path.display())))?
            }
            None if chosen => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| PluginError::Kubeconfig(e.to_string()))?,
            None => Config::infer()
                .await
                .map_err(|e| PluginError::Kubeconfig(e.to_string()))?,
        };
        let timeout = global.request_timeout;
        let mut config = config;
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        let token = match &global.token {
            Some(token) => Ok(token.clone()),
            None if global.send_kubeconfig_token => bearer_token(&config).await,
            None => Err(
                "neither --token nor --send-kubeconfig-token was given (the kubeconfig's own credential goes to the approver only when asked)"
                    .to_owned(),
            ),
        };
        let client = Client::try_from(config)
            .map_err(|e| PluginError::Kubeconfig(format!("building the client: {e}")))?;
        Ok(Self {
            client,
            token,
            timeout,
        })
    }

    /// One API call within the timeout, its error named `what` (`get
    /// certificatesigningrequests/NAME`).
    async fn call<T>(
        &self,
        what: impl Into<String>,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, PluginError> {
        let what = what.into();
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(PluginError::api(what, error)),
            Err(_) => Err(PluginError::Timeout {
                what,
                timeout: self.timeout,
            }),
        }
    }

    /// Every object of a list, page by page.
    async fn list_all<K>(
        &self,
        api: &Api<K>,
        what: &str,
        params: ListParams,
    ) -> Result<Vec<K>, PluginError>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let mut out = Vec::new();
        let mut params = params.limit(PAGE);
        loop {
            let page = self.call(format!("list {what}"), api.list(&params)).await?;
            out.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }

    /// The CSR.
    pub async fn csr(&self, name: &str) -> Result<CertificateSigningRequest, PluginError> {
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        self.call(
            format!("get certificatesigningrequests.{CSR_GROUP}/{name}"),
            api.get(name),
        )
        .await
    }

    /// The kubelet-serving CSRs.
    pub async fn serving_csrs(&self) -> Result<Vec<CertificateSigningRequest>, PluginError> {
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        let params =
            ListParams::default().fields(&format!("spec.signerName={KUBELET_SERVING_SIGNER}"));
        self.list_all(
            &api,
            &format!("certificatesigningrequests.{CSR_GROUP}"),
            params,
        )
        .await
    }

    /// The Nodes, as the controller indexes them; their names too.
    pub async fn nodes(&self) -> Result<(NodeSet, Vec<String>), PluginError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let nodes = self.list_all(&api, "nodes", ListParams::default()).await?;
        let names = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        Ok((nodes.iter().map(k8s::node_record).collect(), names))
    }

    /// The Services and ServiceCIDRs, as the controller indexes them: a 404 for
    /// ServiceCIDRs (Kubernetes before 1.33) is [`Listing::Unserved`], as there.
    pub async fn services(&self) -> Result<ServiceSet, PluginError> {
        let services: Api<Service> = Api::all(self.client.clone());
        let cidrs: Api<ServiceCIDR> = Api::all(self.client.clone());
        let (services, cidrs) = tokio::join!(
            self.list_all(&services, "services", ListParams::default()),
            self.list_all(
                &cidrs,
                "servicecidrs.networking.k8s.io",
                ListParams::default()
            ),
        );
        let mut set = ServiceSet::new();
        for service in &services? {
            set.insert(Arc::new(k8s::service_record(service)));
        }
        set.set_services_listing(Listing::Listed);
        match cidrs {
            Ok(cidrs) => {
                for cidr in &cidrs {
                    set.insert_range(Arc::new(k8s::service_range(cidr)));
                }
                set.set_ranges_listing(Listing::Listed);
            }
            Err(PluginError::Api {
                status: Some(404), ..
            }) => {
                set.set_ranges_listing(Listing::Unserved);
            }
            Err(error) => return Err(error),
        }
        Ok(set)
    }

    /// The leader Lease.
    pub async fn lease(&self, namespace: &str, name: &str) -> Result<Lease, PluginError> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        self.call(
            format!("get leases.coordination.k8s.io/{name} in namespace {namespace}"),
            api.get(name),
        )
        .await
    }

    /// A Pod.
    pub async fn pod(&self, namespace: &str, name: &str) -> Result<Pod, PluginError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.call(
            format!("get pods/{name} in namespace {namespace}"),
            api.get(name),
        )
        .await
    }

    /// One key of a ConfigMap.
    pub async fn config_map_key(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<String, PluginError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("get configmaps/{name} in namespace {namespace}");
        let map = self.call(what.clone(), api.get(name)).await?;
        map.data.and_then(|mut d| d.remove(key)).ok_or_else(|| {
            PluginError::Missing(format!("ConfigMap {namespace}/{name} has no key {key:?}"))
        })
    }

    /// The `events.k8s.io/v1` Events regarding the CSR (in `default`, where Events about
    /// cluster-scoped objects go).
    pub async fn events_about(
        &self,
        csr: &CertificateSigningRequest,
    ) -> Result<Vec<Event>, PluginError> {
        let name = csr.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let params = ListParams::default().fields(&format!(
            "regarding.kind=CertificateSigningRequest,regarding.name={name}"
        ));
        self.list_all(&api, "events.events.k8s.io in namespace default", params)
            .await
    }

    /// The `events.k8s.io/v1` Events regarding any CSR.
    pub async fn events_about_csrs(&self) -> Result<Vec<Event>, PluginError> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let params = ListParams::default().fields("regarding.kind=CertificateSigningRequest");
        self.list_all(&api, "events.events.k8s.io in namespace default", params)
            .await
    }

    /// Check 14's SubjectAccessReview, as the controller asks it: may the requestor
    /// `create` `certificatesigningrequests/selfnodeserver`?
    pub async fn selfnodeserver(&self, csr: &CsrInput) -> Result<AccessReview, PluginError> {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answered = self
            .call(
                "create subjectaccessreviews.authorization.k8s.io",
                api.create(&PostParams::default(), &review::selfnodeserver_review(csr)),
            )
            .await?;
        let (allowed, detail) =
            review::selfnodeserver_answer(&csr.username, answered.status.unwrap_or_default());
        Ok(if allowed {
            AccessReview::Allowed(detail)
        } else {
            AccessReview::Refused(detail)
        })
    }
}

/// The bearer token the kubeconfig user sends to the API server: kube's own
/// authentication layer (token, token file, exec or auth provider plugin) is run once
/// against a service that only records the `Authorization` header it was given.
async fn bearer_token(config: &Config) -> Result<String, String> {
    let layer = config
        .auth_layer()
        .map_err(|e| format!("the kubeconfig user's credentials cannot be used: {e}"))?
        .ok_or("the kubeconfig user has no bearer token (it authenticates with a client certificate, or not at all)")?;
    let capture = Capture::default();
    let seen = Arc::clone(&capture.0);
    let client = kube::client::ClientBuilder::new(capture, "default")
        .with_layer(&layer)
        .build();
    let request = http::Request::get("/")
        .body(kube::client::Body::from(Vec::new()))
        .map_err(|e| e.to_string())?;
    client
        .send(request)
        .await
        .map_err(|e| format!("getting the kubeconfig user's token failed: {e}"))?;
    let header = seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .ok_or("the kubeconfig user has no bearer token")?;
    let value = header
        .to_str()
        .map_err(|_| "the kubeconfig user's token is not text".to_owned())?;
    match value.strip_prefix("Bearer ") {
        Some(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        _ => {
            Err("the kubeconfig user authenticates with a password, not a bearer token".to_owned())
        }
    }
}

/// A service that answers every request with an empty 200, remembering its
/// `Authorization` header.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<http::HeaderValue>>>);

impl tonic::codegen::Service<http::Request<kube::client::Body>> for Capture {
    type Response = http::Response<kube::client::Body>;
    // kube's token refresh fails with a boxed error: its layer needs the same type here.
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            request.headers().get(http::header::AUTHORIZATION).cloned();
        ready(Ok(http::Response::new(
            kube::client::Body::from(Vec::new()),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn token_of(kubeconfig: &str) -> Result<String, String> {
        let kc = Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        bearer_token(&config).await
    }

    fn kubeconfig(user: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:6443'}}}}]
users: [{{name: u, user: {user}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"
        )
    }

    #[tokio::test]
    async fn the_kubeconfig_users_token_is_found_whatever_holds_it() {
        assert_eq!(
            token_of(&kubeconfig("{token: abc.def}")).await,
            Ok("abc.def".to_owned())
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-a-file").expect("write");
        assert_eq!(
            token_of(&kubeconfig(&format!("{{tokenFile: '{}'}}", file.display()))).await,
            Ok("from-a-file".to_owned())
        );
        // An exec plugin, as EKS, GKE and AKS kubeconfigs use.
        let script = dir.path().join("credential");
        std::fs::write(
            &script,
            "#!/bin/sh\necho '{\"apiVersion\": \"client.authentication.k8s.io/v1\", \"kind\": \"ExecCredential\", \"status\": {\"token\": \"exec-token\"}}'\n",
        )
        .expect("write");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let exec = format!(
            "{{exec: {{apiVersion: client.authentication.k8s.io/v1, command: '{}', interactiveMode: Never}}}}",
            script.display()
        );
        assert_eq!(
            token_of(&kubeconfig(&exec)).await,
            Ok("exec-token".to_owned())
        );
        assert!(
            token_of(&kubeconfig("{}"))
                .await
                .is_err_and(|e| e.contains("no bearer token"))
        );
        assert!(
            token_of(&kubeconfig("{username: a, password: b}"))
                .await
                .is_err_and(|e| e.contains("password"))
        );
    }
}
