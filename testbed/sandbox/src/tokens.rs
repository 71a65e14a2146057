//! Token identity in the sandbox: what a cluster does for a DaemonSet Pod with a projected
//! ServiceAccount token, done through the testbed cluster's API — the agent's
//! ServiceAccount, one Pod per node controlled by the agent DaemonSet (there is no
//! DaemonSet controller; the Pod carries its owner reference as one it created would), and a
//! TokenRequest bound to that Pod with the approver's audience, as the kubelet makes for the
//! projected volume.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

use super::SandboxError;

/// The agent's ServiceAccount and DaemonSet (deploy/base/agent.yaml).
pub const AGENT: &str = "rubber-stamp-agent";

/// The audience of the agents' tokens (deploy/base/agent.yaml, the approver's default).
pub const AUDIENCE: &str = "rubber-stamp";

/// Token lifetime, as the DaemonSet's projected volume asks.
pub const EXPIRATION_SECONDS: i64 = 3600;

/// Which credential the sandbox's agents attest with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AgentIdentity {
    /// A projected ServiceAccount token bound to the node's agent Pod.
    #[default]
    Token,
    /// The kubelet's client certificate.
    KubeletCert,
}

impl AgentIdentity {
    /// The approver's `--agent-identity` for this mode.
    pub fn approver_flag(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::KubeletCert => "kubelet-cert",
        }
    }
}

fn api_error(what: String) -> impl FnOnce(kube::Error) -> SandboxError {
    move |e| SandboxError::Setup(format!("{what}: {e}"))
}

/// Creates the ServiceAccount `name` in `namespace` unless it exists.
pub async fn ensure_service_account(
    admin: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), SandboxError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    if accounts
        .get_opt(name)
        .await
        .map_err(api_error(format!(
            "reading ServiceAccount {namespace}/{name}"
        )))?
        .is_some()
    {
        return Ok(());
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .map_err(api_error(format!(
            "creating ServiceAccount {namespace}/{name}"
        )))?;
    Ok(())
}

/// A Pod running as `service_account` on `node`; `daemonset` makes it that DaemonSet's Pod.
pub async fn create_pod(
    admin: &kube::Client,
    namespace: &str,
    name: &str,
    service_account: &str,
    node: &str,
    daemonset: Option<&str>,
) -> Result<Pod, SandboxError> {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                daemonset.unwrap_or(name).to_owned(),
            )])),
            owner_references: daemonset.map(|daemonset| {
                vec![OwnerReference {
                    api_version: "apps/v1".to_owned(),
                    kind: "DaemonSet".to_owned(),
                    name: daemonset.to_owned(),
                    // No DaemonSet object exists in the testbed; the approver checks the
                    // controller's kind and name, which is what a real owner reference of
                    // a DaemonSet Pod carries.
                    uid: "00000000-0000-4000-8000-000000000001".to_owned(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_owned()),
            service_account_name: Some(service_account.to_owned()),
            host_network: Some(true),
            containers: vec![Container {
                name: "agent".to_owned(),
                image: Some("rubber-stamp-agent".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    };
    Api::<Pod>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .map_err(api_error(format!("creating Pod {namespace}/{name}")))
}

/// A token of `service_account` bound to `pod` (or to nothing), for `audience`, as the
/// kubelet requests it for a projected volume.
pub async fn request_token(
    admin: &kube::Client,
    namespace: &str,
    service_account: &str,
    pod: Option<&Pod>,
    audience: &str,
) -> Result<String, SandboxError> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_owned()],
            expiration_seconds: Some(EXPIRATION_SECONDS),
            bound_object_ref: pod.map(|pod| BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .map_err(api_error(format!(
            "requesting a token of {namespace}/{service_account}"
        )))?;
    issued
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| SandboxError::Setup("the TokenRequest came back without a token".into()))
}
