//! The testbed API server's semantics, exercised with kube-rs: authentication, RBAC, SubjectAccessReview, CSR rules, the signer, concurrency, pagination, selectors, faults.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use rubber_stamp_apiserver::{Cluster, ClusterOptions, FaultAction, FaultRule, UserInfo};
use rubber_stamp_testkit::csr::CsrSpec;
use rubber_stamp_testkit::pki;
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn cluster() -> Result<Cluster, Box<dyn std::error::Error>> {
    init();
    Ok(Cluster::start(ClusterOptions::default()).await?)
}

fn api_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Option<(u16, String, String)> {
    match r {
        Err(kube::Error::Api(s)) => Some((s.code, s.reason.clone(), s.message.clone())),
        _ => None,
    }
}

pub(crate) fn csr(
    name: &str,
    node: &str,
    signer: &str,
    usages: &[&str],
) -> Result<CertificateSigningRequest, pki::PkiError> {
    let ip: IpAddr = [10, 0, 0, 7].into();
    let req = CsrSpec::kubelet_with(node, &[node], &[ip]).generate()?;
    Ok(CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(req.csr_pem.into_bytes()),
            signer_name: signer.to_owned(),
            usages: Some(usages.iter().map(|u| (*u).to_owned()).collect()),
            username: Some("forged-user".to_owned()),
            groups: Some(vec!["system:masters".to_owned()]),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    })
}

fn approval(mut c: CertificateSigningRequest, ty: &str) -> CertificateSigningRequest {
    let mut status = c.status.take().unwrap_or_default();
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: ty.to_owned(),
            status: "True".to_owned(),
            reason: Some("Test".to_owned()),
            message: Some("by the test".to_owned()),
            ..CertificateSigningRequestCondition::default()
        });
    c.status = Some(status);
    c
}

const SERVING: &[&str] = &["digital signature", "server auth"];
const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

const APPROVER_RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: approver}
rules:
- apiGroups: [certificates.k8s.io]
  resources: [certificatesigningrequests]
  verbs: [get, list, watch]
- apiGroups: [certificates.k8s.io]
  resources: [certificatesigningrequests/approval]
  verbs: [update]
- apiGroups: [certificates.k8s.io]
  resources: [signers]
  resourceNames: [kubernetes.io/kubelet-serving]
  verbs: [approve]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: approver}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: approver}
subjects:
- {kind: ServiceAccount, name: approver, namespace: kube-system}
"#;

#[tokio::test]
async fn anonymous_and_unknown_tokens_get_401_but_version_is_public() -> TestResult {
    let c = cluster().await?;
    let mut config = kube::Config::new(c.url().parse()?);
    config.root_cert = Some(vec![
        rustls_pki_types::pem::PemObject::from_pem_slice(c.ca_pem().as_bytes())
            .map(|d: rustls_pki_types::CertificateDer<'_>| d.to_vec())?,
    ]);
    let anonymous = kube::Client::try_from(config)?;
    let version = anonymous.apiserver_version().await?;
    assert_eq!(version.major, "1");
    let nodes: Api<Node> = Api::all(anonymous);
    let (code, reason, _) =
        api_code(nodes.list(&ListParams::default()).await).ok_or("expected an API error")?;
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));

    let stranger = c.add_token("known", UserInfo::new("x", &[]));
    let mut unknown = stranger.clone();
    unknown.auth = rubber_stamp_apiserver::Auth::Token("unknown".into());
    let nodes: Api<Node> = Api::all(c.client(&unknown).await?);
    assert_eq!(
        api_code(nodes.list(&ListParams::default()).await).map(|e| e.0),
        Some(401)
    );
    // a known token without any grant is authenticated but forbidden
    let nodes: Api<Node> = Api::all(c.client(&stranger).await?);
    let (code, reason, message) =
        api_code(nodes.list(&ListParams::default()).await).ok_or("expected 403")?;
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        "nodes is forbidden: User \"x\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    c.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn csr_identity_validation_approval_rbac_and_signing() -> TestResult {
    let c = cluster().await?;
    c.load_yaml(APPROVER_RBAC)?;
    let node = c.client(&c.node("worker-1")?).await?;
    let approver = c
        .client(&c.service_account("kube-system", "approver")?)
        .await?;
    let node_csrs: Api<CertificateSigningRequest> = Api::all(node.clone());
    let approver_csrs: Api<CertificateSigningRequest> = Api::all(approver.clone());

    // The server sets the requestor from the client certificate, whatever was sent.
    let mut good = csr("good", "worker-1", KUBELET_SERVING, SERVING)?;
    good.spec.expiration_seconds = Some(3600);
    let created = node_csrs.create(&PostParams::default(), &good).await?;
    assert_eq!(
        created.spec.username.as_deref(),
        Some("system:node:worker-1")
    );
    assert_eq!(
        created.spec.groups,
        Some(vec![
            "system:nodes".to_owned(),
            "system:authenticated".to_owned()
        ])
    );
    // x509 users carry their credential id (CommonNameUserConversion, x509.go, 1.32+):
    // `X509SHA256=` and the certificate's SHA-256 in lower-case hex.
    let extra = created.spec.extra.clone().unwrap_or_default();
    let ids = extra
        .get("authentication.kubernetes.io/credential-id")
        .ok_or("no credential id in spec.extra")?;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let hex = ids[0]
        .strip_prefix("X509SHA256=")
        .ok_or("not an X509SHA256 id")?;
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{hex}"
    );
    let other = c.client(&c.node("worker-2")?).await?;
    let other_csr = Api::<CertificateSigningRequest>::all(other)
        .create(
            &PostParams::default(),
            &csr("other-node", "worker-2", KUBELET_SERVING, SERVING)?,
        )
        .await?;
    let other_ids = other_csr.spec.extra.unwrap_or_default();
    assert_ne!(
        other_ids.get("authentication.kubernetes.io/credential-id"),
        Some(ids),
        "another certificate, another id"
    );

    // Validation errors are 422 Invalid with causes.
    let bad = csr(
        "bad",
        "worker-1",
        KUBELET_SERVING,
        &["server auth", "bogus", "server auth"],
    )?;
    let (code, reason, message) =
        api_code(node_csrs.create(&PostParams::default(), &bad).await).ok_or("422")?;
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.contains("spec.usages[1]: Unsupported value: \"bogus\""),
        "{message}"
    );
    assert!(
        message.contains("spec.usages[2]: Duplicate value: \"server auth\""),
        "{message}"
    );
    let mut short = csr("short", "worker-1", KUBELET_SERVING, SERVING)?;
    short.spec.expiration_seconds = Some(599);
    let (_, _, message) =
        api_code(node_csrs.create(&PostParams::default(), &short).await).ok_or("422")?;
    assert!(
        message.contains("may not specify a duration less than 600 seconds"),
        "{message}"
    );

    // A node may not approve; the approver may, for kubelet-serving only.
    let current = node_csrs.get("good").await?;
    let pp = PostParams::default();
    let (code, _, message) = api_code(
        node_csrs
            .replace_subresource(
                "approval",
                "good",
                &pp,
                &approval(current.clone(), "Approved"),
            )
            .await,
    )
    .ok_or("node approval must fail")?;
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("cannot update resource \"certificatesigningrequests/approval\""),
        "{message}"
    );
    // the main resource silently ignores status changes, as kube-apiserver does
    let sneaky = node_csrs
        .replace("good", &pp, &approval(current.clone(), "Approved"))
        .await;
    assert_eq!(
        api_code(sneaky).map(|e| e.0),
        Some(403),
        "nodes may not update CSRs at all"
    );
    approver_csrs
        .replace_subresource("approval", "good", &pp, &approval(current, "Approved"))
        .await?;

    // The signer issues promptly, honouring expirationSeconds, chained to the cluster CA.
    let issued = wait_for(|| async {
        let c = node_csrs.get("good").await.ok()?;
        c.status?.certificate.filter(|b| !b.0.is_empty())
    })
    .await
    .ok_or("certificate was not issued")?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&issued.0)?;
    let cert = pem.parse_x509()?;
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 3600 + 300);
    let (_, ca_pem) = x509_parser::pem::parse_x509_pem(c.ca_pem().as_bytes())?;
    cert.verify_signature(Some(ca_pem.parse_x509()?.public_key()))?;

    // Denying an approved CSR is invalid; approving another signer is forbidden by the signers rule.
    let approved = approver_csrs.get("good").await?;
    let (code, _, message) = api_code(
        approver_csrs
            .replace_subresource("approval", "good", &pp, &approval(approved, "Denied"))
            .await,
    )
    .ok_or("deny after approve")?;
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("mutually exclusive"), "{message}");
    node_csrs
        .create(
            &pp,
            &csr("other", "worker-1", "example.com/custom", SERVING)?,
        )
        .await?;
    let other = approver_csrs.get("other").await?;
    let (code, _, message) = api_code(
        approver_csrs
            .replace_subresource("approval", "other", &pp, &approval(other, "Approved"))
            .await,
    )
    .ok_or("other signer")?;
    assert_eq!(code, 403);
    assert!(
        message.contains(
            "user not permitted to approve requests with signerName \"example.com/custom\""
        ),
        "{message}"
    );

    // A domain wildcard resourceName grants every signer of that domain.
    c.load_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: example-signers}
rules:
- {apiGroups: [certificates.k8s.io], resources: [signers], resourceNames: ["example.com/*"], verbs: [approve]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: example-signers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: example-signers}
subjects: [{kind: ServiceAccount, name: approver, namespace: kube-system}]
"#,
    )?;
    let other = approver_csrs.get("other").await?;
    approver_csrs
        .replace_subresource("approval", "other", &pp, &approval(other, "Approved"))
        .await?;

    // An approved kubelet-serving CSR that breaks the kubelet-serving rules is Failed by the signer.
    node_csrs
        .create(
            &pp,
            &csr(
                "client-usage",
                "worker-1",
                KUBELET_SERVING,
                &["digital signature", "client auth"],
            )?,
        )
        .await?;
    let cu = approver_csrs.get("client-usage").await?;
    approver_csrs
        .replace_subresource("approval", "client-usage", &pp, &approval(cu, "Approved"))
        .await?;
    let failed = wait_for(|| async {
        let c = node_csrs.get("client-usage").await.ok()?;
        c.status?
            .conditions?
            .into_iter()
            .find(|x| x.type_ == "Failed")
    })
    .await
    .ok_or("signer did not fail the request")?;
    assert_eq!(failed.reason.as_deref(), Some("SignerValidationFailure"));
    assert_eq!(
        failed.message.as_deref(),
        Some("usages did not match [digital signature key encipherment server auth]")
    );
    // The approver may not delete CSRs.
    let (code, _, message) =
        api_code(approver_csrs.delete("good", &DeleteParams::default()).await).ok_or("delete")?;
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot delete resource \"certificatesigningrequests\""),
        "{message}"
    );
    c.shutdown().await;
    Ok(())
}

async fn wait_for<T, F, Fut>(mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn node_restriction_resource_names_and_subject_access_review() -> TestResult {
    let c = cluster().await?;
    let admin = c.client(&c.admin()?).await?;
    let w1 = c.client(&c.node("worker-1")?).await?;
    let mk_node = |name: &str| Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    let w1_nodes: Api<Node> = Api::all(w1.clone());
    w1_nodes
        .create(&PostParams::default(), &mk_node("worker-1"))
        .await?;
    let (code, _, message) = api_code(
        w1_nodes
            .create(&PostParams::default(), &mk_node("worker-2"))
            .await,
    )
    .ok_or("other node")?;
    assert_eq!(code, 403, "{message}");
    Api::<Node>::all(admin.clone())
        .create(&PostParams::default(), &mk_node("worker-2"))
        .await?;
    let label = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    w1_nodes
        .patch("worker-1", &PatchParams::default(), &label)
        .await?;
    // The Node authorizer lets a node write any Node; NodeRestriction admission refuses
    // another's, with its own words.
    let (code, _, message) = api_code(
        w1_nodes
            .patch("worker-2", &PatchParams::default(), &label)
            .await,
    )
    .ok_or("another node's Node")?;
    assert_eq!(code, 403);
    assert!(
        message.contains("node \"worker-1\" is not allowed to modify node \"worker-2\""),
        "{message}"
    );
    // AuthorizeNodeWithSelectors (1.32+): a node reads its own Node, not the others.
    assert!(w1_nodes.get("worker-1").await.is_ok());
    assert_eq!(
        api_code(w1_nodes.get("worker-2").await).map(|e| e.0),
        Some(403)
    );
    assert_eq!(
        api_code(w1_nodes.list(&ListParams::default()).await).map(|e| e.0),
        Some(403),
        "listing every Node needs RBAC beyond the Node authorizer"
    );

    // resourceNames restrict get to named objects; list is never allowed by them.
    c.load_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: one-config, namespace: default}
rules: [{apiGroups: [""], resources: [configmaps], resourceNames: [allowed], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: one-config, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: one-config}
subjects: [{kind: User, name: alice}]
"#,
    )?;
    let admin_cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    for name in ["allowed", "secret"] {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        admin_cms.create(&PostParams::default(), &cm).await?;
    }
    let alice: Api<ConfigMap> = Api::namespaced(c.client(&c.user("alice", &[])?).await?, "default");
    alice.get("allowed").await?;
    assert_eq!(api_code(alice.get("secret").await).map(|e| e.0), Some(403));
    assert_eq!(
        api_code(alice.list(&ListParams::default()).await).map(|e| e.0),
        Some(403)
    );
    let alice_other_ns: Api<ConfigMap> =
        Api::namespaced(c.client(&c.user("alice", &[])?).await?, "kube-system");
    let (_, _, message) = api_code(alice_other_ns.get("allowed").await).ok_or("other namespace")?;
    assert!(
        message.contains("in the namespace \"kube-system\""),
        "{message}"
    );

    // SubjectAccessReview evaluates the same rules for whoever is named in the spec.
    let sars: Api<SubjectAccessReview> = Api::all(admin);
    let review = |user: &str,
                  groups: &[&str],
                  verb: &str,
                  resource: &str,
                  sub: &str,
                  name: &str,
                  ns: &str| {
        SubjectAccessReview {
            metadata: ObjectMeta::default(),
            spec: SubjectAccessReviewSpec {
                user: Some(user.to_owned()),
                groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_owned()),
                    group: Some(
                        if resource == "configmaps" {
                            ""
                        } else {
                            "certificates.k8s.io"
                        }
                        .to_owned(),
                    ),
                    resource: Some(resource.to_owned()),
                    subresource: Some(sub.to_owned()),
                    name: Some(name.to_owned()),
                    namespace: Some(ns.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            status: None,
        }
    };
    let cases = [
        (
            review("alice", &[], "get", "configmaps", "", "allowed", "default"),
            true,
        ),
        (
            review("alice", &[], "get", "configmaps", "", "secret", "default"),
            false,
        ),
        (
            review(
                "system:node:n",
                &["system:nodes"],
                "create",
                "certificatesigningrequests",
                "",
                "",
                "",
            ),
            true,
        ),
        (
            review(
                "system:node:n",
                &["system:nodes"],
                "update",
                "certificatesigningrequests",
                "approval",
                "x",
                "",
            ),
            false,
        ),
        (
            review(
                "root",
                &["system:masters"],
                "approve",
                "signers",
                "",
                KUBELET_SERVING,
                "",
            ),
            true,
        ),
    ];
    for (sar, want) in cases {
        let out = sars.create(&PostParams::default(), &sar).await?;
        let status = out.status.ok_or("SAR has a status")?;
        assert_eq!(status.allowed, want, "{:?}", sar.spec);
        if want && sar.spec.user.as_deref() == Some("alice") {
            assert_eq!(
                status.reason.as_deref(),
                Some(
                    "RBAC: allowed by RoleBinding \"default/one-config\" of Role \"one-config\" to User \"alice\""
                )
            );
        }
    }
    c.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn optimistic_concurrency_generate_name_patches_and_dry_run() -> TestResult {
    let c = cluster().await?;
    let cms: Api<ConfigMap> = Api::namespaced(c.client(&c.admin()?).await?, "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            generate_name: Some("gen-".into()),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_owned(), "1".to_owned())].into()),
        ..ConfigMap::default()
    };
    let created = cms.create(&PostParams::default(), &cm).await?;
    let name = created.metadata.name.clone().ok_or("generated name")?;
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let mut fresh = created.clone();
    fresh.data = Some([("k".to_owned(), "2".to_owned())].into());
    let updated = cms.replace(&name, &PostParams::default(), &fresh).await?;
    let rv = |c: &ConfigMap| {
        c.metadata
            .resource_version
            .clone()
            .unwrap_or_default()
            .parse::<u64>()
            .unwrap_or(0)
    };
    assert!(rv(&updated) > rv(&created));
    let (code, reason, _) =
        api_code(cms.replace(&name, &PostParams::default(), &fresh).await).ok_or("stale")?;
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // Patches need no resourceVersion; strategic merge deletes with null.
    let merged = cms
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"k": null, "j": "3"}})),
        )
        .await?;
    assert_eq!(merged.data, Some([("j".to_owned(), "3".to_owned())].into()));
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/j", "value": "4"}]))?;
    let patched = cms
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(jp))
        .await?;
    assert_eq!(
        patched.data,
        Some([("j".to_owned(), "4".to_owned())].into())
    );
    // A no-op write does not bump the resourceVersion.
    let again = cms
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"j": "4"}})),
        )
        .await?;
    assert_eq!(rv(&again), rv(&patched));

    // dryRun=All validates and answers without persisting.
    let dry = ConfigMap {
        metadata: ObjectMeta {
            name: Some("dry".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    cms.create(
        &PostParams {
            dry_run: true,
            ..PostParams::default()
        },
        &dry,
    )
    .await?;
    assert_eq!(api_code(cms.get("dry").await).map(|e| e.0), Some(404));
    // Creating into a namespace that does not exist is 404.
    let nowhere: Api<ConfigMap> = Api::namespaced(c.client(&c.admin()?).await?, "nowhere");
    assert_eq!(
        api_code(nowhere.create(&PostParams::default(), &dry).await).map(|e| e.0),
        Some(404)
    );
    c.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn pagination_and_label_and_field_selectors() -> TestResult {
    let c = cluster().await?;
    let cms: Api<ConfigMap> = Api::namespaced(c.client(&c.admin()?).await?, "default");
    for i in 0..25 {
        let tier = ["web", "db", "cache"][i % 3];
        let mut labels = std::collections::BTreeMap::from([("tier".to_owned(), tier.to_owned())]);
        if i % 5 == 0 {
            labels.insert("special".into(), "yes".into());
        }
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("cm-{i:02}")),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        cms.create(&PostParams::default(), &cm).await?;
    }
    let mut seen = BTreeSet::new();
    let mut pages = 0;
    let mut lp = ListParams::default().limit(10);
    let mut first_rv = None;
    loop {
        let page = cms.list(&lp).await?;
        pages += 1;
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        assert_eq!(
            Some(page.metadata.resource_version.clone()),
            first_rv,
            "pages report the first page's resourceVersion"
        );
        for cm in &page.items {
            assert!(
                seen.insert(cm.metadata.name.clone().unwrap_or_default()),
                "no duplicates across pages"
            );
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 25));

    let count = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            cms.list(&ListParams::default().labels(sel))
                .await
                .map(|l| l.items.len())
        }
    };
    assert_eq!(count("tier=web").await?, 9);
    assert_eq!(count("tier==db").await?, 8);
    assert_eq!(count("tier!=web").await?, 16);
    assert_eq!(count("tier in (web,db)").await?, 17);
    assert_eq!(count("tier notin (web,db)").await?, 8);
    assert_eq!(count("special").await?, 5);
    assert_eq!(count("!special").await?, 20);
    assert_eq!(count("tier=web,special").await?, 2);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=cm-07"))
        .await?;
    assert_eq!(by_name.items.len(), 1);
    let not_name = cms
        .list(&ListParams::default().fields("metadata.name!=cm-07,metadata.namespace=default"))
        .await?;
    assert_eq!(not_name.items.len(), 24);
    let (code, _, message) = api_code(cms.list(&ListParams::default().fields("data.k=v")).await)
        .ok_or("unsupported field")?;
    assert_eq!(code, 400);
    assert!(
        message.contains("field label not supported: data.k"),
        "{message}"
    );
    let csrs: Api<CertificateSigningRequest> = Api::all(c.client(&c.admin()?).await?);
    let signer = csrs
        .list(&ListParams::default().fields("spec.signerName=kubernetes.io/kubelet-serving"))
        .await?;
    assert!(signer.items.is_empty());
    c.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn injected_faults_hit_exactly_what_they_match() -> TestResult {
    let c = cluster().await?;
    let cms: Api<ConfigMap> = Api::namespaced(c.client(&c.admin()?).await?, "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("x".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    cms.create(&PostParams::default(), &cm).await?;

    // kube-rs retries a 429 itself, after the server's Retry-After.
    c.faults().inject(
        FaultRule::new(FaultAction::TooManyRequests {
            retry_after_secs: 1,
        })
        .verb("list")
        .resource("configmaps"),
    );
    let started = std::time::Instant::now();
    cms.get("x").await?;
    assert_eq!(c.faults().injected(), 0, "a get does not match a list rule");
    cms.list(&ListParams::default()).await?;
    assert_eq!(c.faults().injected(), 1);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "the client waited for Retry-After"
    );

    c.faults().inject(
        FaultRule::new(FaultAction::InternalError)
            .times(2)
            .verb("get"),
    );
    assert_eq!(api_code(cms.get("x").await).map(|e| e.0), Some(500));
    assert_eq!(api_code(cms.get("x").await).map(|e| e.0), Some(500));
    cms.get("x").await?;

    c.faults().conflict_next_update("configmaps", "x");
    let patch = Patch::Merge(json!({"data": {"a": "b"}}));
    let (code, reason, _) =
        api_code(cms.patch("x", &PatchParams::default(), &patch).await).ok_or("409")?;
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    c.faults().clear();
    cms.patch("x", &PatchParams::default(), &patch).await?;
    assert_eq!(c.faults().injected(), 4);

    c.faults()
        .set_latency(std::time::Duration::from_millis(150));
    let started = std::time::Instant::now();
    cms.get("x").await?;
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    c.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn status_subresource_and_direct_object_access() -> TestResult {
    let c = cluster().await?;
    let nodes: Api<Node> = Api::all(c.client(&c.admin()?).await?);
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    c.objects().create(&node)?;
    assert_eq!(c.objects().count::<Node>()?, 1);
    // The main resource ignores status; /status ignores everything else.
    let with_status =
        Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}, "status": {"phase": "Running"}}));
    let main = nodes
        .patch("n1", &PatchParams::default(), &with_status)
        .await?;
    assert!(main.status.and_then(|s| s.phase).is_none());
    assert_eq!(
        main.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("a"))
            .map(String::as_str),
        Some("b")
    );
    let status =
        Patch::Merge(json!({"metadata": {"labels": {"c": "d"}}, "status": {"phase": "Running"}}));
    let st = nodes
        .patch_status("n1", &PatchParams::default(), &status)
        .await?;
    assert_eq!(st.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    assert!(
        st.metadata
            .labels
            .as_ref()
            .is_some_and(|l| !l.contains_key("c"))
    );
    let read: Option<Node> = c.objects().get("", "n1")?;
    assert_eq!(
        read.and_then(|n| n.status).and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
    // CSRs created directly record the given requestor and get signed when approved.
    let user = UserInfo::new("system:node:n1", &["system:nodes"]);
    let direct = c
        .objects()
        .create_as(&user, &csr("direct", "n1", KUBELET_SERVING, SERVING)?)?;
    assert_eq!(direct.spec.username.as_deref(), Some("system:node:n1"));
    let mut approved = direct.clone();
    approved.status = Some(CertificateSigningRequestStatus {
        conditions: Some(vec![CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            ..CertificateSigningRequestCondition::default()
        }]),
        certificate: None,
    });
    c.objects().update(&approved)?;
    let issued = wait_for(|| async {
        let got: CertificateSigningRequest = c.objects().get("", "direct").ok()??;
        got.status?.certificate
    })
    .await;
    assert!(issued.is_some(), "the signer reacts to direct writes too");
    c.shutdown().await;
    Ok(())
}

/// Secrets and ConfigMaps as kube-apiserver keeps them: `SetDefaults_Secret` (type
/// `Opaque`), `Convert_v1_Secret_To_core_Secret` (`stringData` folded into `data`),
/// `ValidateSecret` (a `kubernetes.io/tls` Secret has both keys; keys are config-map keys),
/// `ValidateSecretUpdate` (the type is immutable; so is an `immutable: true` object's data),
/// `ValidateConfigMapUpdate`; and a delete with stale preconditions is a 409.
#[tokio::test]
async fn secrets_default_their_type_keep_it_and_honour_immutable() -> TestResult {
    let c = cluster().await?;
    let client = c.client(&c.admin()?).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    };

    let created = secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: meta("plain"),
                data: Some([("a".to_owned(), ByteString(b"x".to_vec()))].into()),
                string_data: Some(
                    [
                        ("a".to_owned(), "y".to_owned()),
                        ("b".to_owned(), "z".to_owned()),
                    ]
                    .into(),
                ),
                ..Secret::default()
            },
        )
        .await?;
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(created.string_data, None);
    let data = created.data.clone().ok_or("data")?;
    assert_eq!(data.get("a"), Some(&ByteString(b"y".to_vec())));
    assert_eq!(data.get("b"), Some(&ByteString(b"z".to_vec())));

    let mut retyped = created.clone();
    retyped.type_ = Some("kubernetes.io/tls".to_owned());
    retyped.data = Some(
        [
            ("tls.crt".to_owned(), ByteString(b"c".to_vec())),
            ("tls.key".to_owned(), ByteString(b"k".to_vec())),
        ]
        .into(),
    );
    let (code, reason, message) = api_code(
        secrets
            .replace("plain", &PostParams::default(), &retyped)
            .await,
    )
    .ok_or("a type change was accepted")?;
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
    assert!(
        message.contains("type: Invalid value: \"kubernetes.io/tls\": field is immutable"),
        "{message}"
    );

    let (code, _, message) = api_code(
        secrets
            .create(
                &PostParams::default(),
                &Secret {
                    metadata: meta("half-tls"),
                    type_: Some("kubernetes.io/tls".to_owned()),
                    data: Some([("tls.crt".to_owned(), ByteString(b"c".to_vec()))].into()),
                    ..Secret::default()
                },
            )
            .await,
    )
    .ok_or("a TLS Secret without tls.key was accepted")?;
    assert_eq!(code, 422);
    assert!(
        message.contains("data[tls.key]: Required value"),
        "{message}"
    );

    let (code, _, message) = api_code(
        secrets
            .create(
                &PostParams::default(),
                &Secret {
                    metadata: meta("bad-key"),
                    data: Some([("no/slash".to_owned(), ByteString(Vec::new()))].into()),
                    ..Secret::default()
                },
            )
            .await,
    )
    .ok_or("a key with a slash was accepted")?;
    assert_eq!(code, 422);
    assert!(
        message.contains("a valid config key must consist of"),
        "{message}"
    );

    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let frozen = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("frozen"),
                immutable: Some(true),
                data: Some([("k".to_owned(), "1".to_owned())].into()),
                ..ConfigMap::default()
            },
        )
        .await?;
    let mut changed = frozen.clone();
    changed.data = Some([("k".to_owned(), "2".to_owned())].into());
    let (code, _, message) = api_code(
        cms.replace("frozen", &PostParams::default(), &changed)
            .await,
    )
    .ok_or("an immutable ConfigMap changed")?;
    assert_eq!(code, 422);
    assert!(
        message.contains("field is immutable when `immutable` is set"),
        "{message}"
    );

    let stale = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: created.metadata.uid.clone(),
            resource_version: Some("1".to_owned()),
        }),
        ..DeleteParams::default()
    };
    let (code, _, message) = api_code(secrets.delete("plain", &stale).await)
        .ok_or("a delete with a stale resourceVersion went through")?;
    assert_eq!(code, 409, "{message}");
    assert!(secrets.get_opt("plain").await?.is_some());
    Ok(())
}

/// `/approval` errors come in the order of kube-apiserver's update path: a stale
/// resourceVersion is 409 (`GuaranteedUpdate`'s precondition), then validation 422
/// (`ValidateCertificateSigningRequestApprovalUpdate`), then the CertificateApproval
/// admission plugin's 403 (`signers` `approve`). The body's whole condition list replaces
/// the stored one (`csrApprovalStrategy.PrepareForUpdate`), so dropping an approval is a
/// 422; `/status` may not add one (`csrStatusStrategy`, "updates may not add").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_errors_come_in_the_real_stores_order() -> TestResult {
    let c = cluster().await?;
    c.load_yaml(APPROVER_RBAC)?;
    let node = c.client(&c.node("worker-1")?).await?;
    let approver = c
        .client(&c.service_account("kube-system", "approver")?)
        .await?;
    let admin: Api<CertificateSigningRequest> = Api::all(c.client(&c.admin()?).await?);
    let node_csrs: Api<CertificateSigningRequest> = Api::all(node);
    let approver_csrs: Api<CertificateSigningRequest> = Api::all(approver);
    let pp = PostParams::default();
    // The approver may not approve this signer's requests.
    node_csrs
        .create(
            &pp,
            &csr("custom", "worker-1", "example.com/custom", SERVING)?,
        )
        .await?;
    let fresh = approver_csrs.get("custom").await?;
    let both = approval(approval(fresh.clone(), "Approved"), "Denied");

    let mut stale = both.clone();
    stale.metadata.resource_version = Some("1".to_owned());
    let code = |r| api_code(r).map(|(code, _, message)| (code, message));
    let (status, message) = code(
        approver_csrs
            .replace_subresource("approval", "custom", &pp, &stale)
            .await,
    )
    .ok_or("stale")?;
    assert_eq!(
        status, 409,
        "a stale resourceVersion comes first: {message}"
    );
    let (status, message) = code(
        approver_csrs
            .replace_subresource("approval", "custom", &pp, &both)
            .await,
    )
    .ok_or("invalid")?;
    assert_eq!(status, 422, "validation before admission: {message}");
    assert!(message.contains("mutually exclusive"), "{message}");
    let (status, _) = code(
        approver_csrs
            .replace_subresource("approval", "custom", &pp, &approval(fresh, "Approved"))
            .await,
    )
    .ok_or("not permitted")?;
    assert_eq!(status, 403);

    // The admin approves it; then a body without the Approved condition is a removal.
    let approved = admin
        .replace_subresource(
            "approval",
            "custom",
            &pp,
            &approval(admin.get("custom").await?, "Approved"),
        )
        .await?;
    let mut dropped = approved.clone();
    if let Some(status) = dropped.status.as_mut() {
        status.conditions = Some(Vec::new());
    }
    let (status, message) = code(
        admin
            .replace_subresource("approval", "custom", &pp, &dropped)
            .await,
    )
    .ok_or("removal")?;
    assert_eq!(status, 422);
    assert!(
        message.contains("updates may not remove a condition of type \"Approved\""),
        "{message}"
    );

    node_csrs
        .create(&pp, &csr("pending", "worker-1", KUBELET_SERVING, SERVING)?)
        .await?;
    let pending = admin.get("pending").await?;
    let (status, message) = code(
        admin
            .replace_status("pending", &pp, &approval(pending, "Approved"))
            .await,
    )
    .ok_or("status approval")?;
    assert_eq!(status, 422);
    assert!(
        message.contains("updates may not add a condition of type \"Approved\""),
        "{message}"
    );
    c.shutdown().await;
    Ok(())
}

/// The stale-reads fault: a kind's lists answer a snapshot at its resourceVersion and its
/// watches hold back later changes — what a watch cache behind etcd serves after a restart
/// or on a lagging HA replica — until the cache catches up; writes go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_serve_a_snapshot_until_the_cache_catches_up() -> TestResult {
    use futures::TryStreamExt as _;
    use kube::api::{WatchEvent, WatchParams};

    let c = cluster().await?;
    let nodes: Api<Node> = Api::all(c.client(&c.admin()?).await?);
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": "n1", "labels": {"v": "old"}}}))?;
    nodes.create(&PostParams::default(), &node).await?;
    let snapshot = c.objects().serve_stale_reads::<Node>()?;

    let patch = json!({"metadata": {"labels": {"v": "new"}}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let listed = nodes.list(&ListParams::default()).await?;
    assert_eq!(
        listed.metadata.resource_version.as_deref(),
        Some(snapshot.to_string().as_str())
    );
    let label = |n: &Node| kube::ResourceExt::labels(n).get("v").cloned();
    assert_eq!(label(&listed.items[0]).as_deref(), Some("old"));

    let mut watch = Box::pin(
        nodes
            .watch(&WatchParams::default().timeout(30), &snapshot.to_string())
            .await?,
    );
    // Held: nothing but (possible) bookmarks at the snapshot while the cache lags; the
    // window only bounds how long we look, a busy machine cannot make it fail.
    let looked = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        loop {
            match watch.try_next().await {
                Ok(Some(WatchEvent::Bookmark(b))) => {
                    assert_eq!(b.metadata.resource_version, snapshot.to_string());
                }
                other => return format!("{other:?}"),
            }
        }
    })
    .await;
    assert!(looked.is_err(), "delivered while stale: {looked:?}");
    c.objects().catch_up_reads::<Node>()?;
    match watch.try_next().await? {
        Some(WatchEvent::Modified(n)) => assert_eq!(label(&n).as_deref(), Some("new")),
        other => panic!("expected the held MODIFIED event, got {other:?}"),
    }
    let fresh = nodes.list(&ListParams::default()).await?;
    assert_eq!(label(&fresh.items[0]).as_deref(), Some("new"));

    // One cache per resource: a stale view of core Events is stale through
    // events.k8s.io/v1 too.
    let admin = c.client(&c.admin()?).await?;
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(admin.clone(), "default");
    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin, "default");
    let first: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "e1"}, "involvedObject": {"kind": "Node", "name": "n1"},
        "reason": "Test", "message": "first", "type": "Normal"}))?;
    core.create(&PostParams::default(), &first).await?;
    c.objects()
        .serve_stale_reads::<k8s_openapi::api::core::v1::Event>()?;
    let second = json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Node", "name": "n1"},
        "reason": "Test", "message": "second", "type": "Normal"});
    core.create(&PostParams::default(), &serde_json::from_value(second)?)
        .await?;
    let listed: Vec<String> = v1
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(kube::ResourceExt::name_any)
        .collect();
    assert_eq!(listed, ["e1"]);
    c.objects()
        .catch_up_reads::<k8s_openapi::api::events::v1::Event>()?;
    assert_eq!(v1.list(&ListParams::default()).await?.items.len(), 2);
    c.shutdown().await;
    Ok(())
}

/// CSR validation as kube-apiserver's: `ValidateSignerName` (a domain of at least two DNS
/// labels, one `/`, a path of DNS subdomains), `validateConditions` (no condition type
/// twice, whatever the type), `validateCertificate` (no PEM headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_signer_names_conditions_and_certificates_are_validated() -> TestResult {
    let c = cluster().await?;
    let node: Api<CertificateSigningRequest> = Api::all(c.client(&c.node("worker-1")?).await?);
    let admin: Api<CertificateSigningRequest> = Api::all(c.client(&c.admin()?).await?);
    let pp = PostParams::default();
    for (signer, expected) in [
        (
            "example/x",
            "should be a domain with at least two segments separated by dots",
        ),
        ("Example.com/x", "validating label \"Example\""),
        ("a.com/b/c", "must be a fully qualified domain and path"),
    ] {
        let (code, _, message) = api_code(
            node.create(&pp, &csr("bad-signer", "worker-1", signer, SERVING)?)
                .await,
        )
        .ok_or("a bad signer name is refused")?;
        assert_eq!(code, 422, "{signer}: {message}");
        assert!(
            message.contains("spec.signerName") && message.contains(expected),
            "{signer}: {message}"
        );
    }

    node.create(&pp, &csr("dup", "worker-1", KUBELET_SERVING, SERVING)?)
        .await?;
    let mut twice = admin.get("dup").await?;
    let custom = CertificateSigningRequestCondition {
        type_: "Custom".to_owned(),
        status: "True".to_owned(),
        ..CertificateSigningRequestCondition::default()
    };
    twice.status = Some(CertificateSigningRequestStatus {
        conditions: Some(vec![custom.clone(), custom]),
        ..CertificateSigningRequestStatus::default()
    });
    let (code, _, message) = api_code(admin.replace_status("dup", &pp, &twice).await)
        .ok_or("duplicate conditions are refused")?;
    assert_eq!(code, 422);
    assert!(
        message.contains("status.conditions[1].type: Duplicate value"),
        "{message}"
    );

    let mut headers = admin.get("dup").await?;
    let pem =
        "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nMIIB\n-----END CERTIFICATE-----\n";
    headers.status = Some(CertificateSigningRequestStatus {
        certificate: Some(ByteString(pem.as_bytes().to_vec())),
        ..CertificateSigningRequestStatus::default()
    });
    let (code, _, message) = api_code(admin.replace_status("dup", &pp, &headers).await)
        .ok_or("a certificate with PEM headers is refused")?;
    assert_eq!(code, 422);
    assert!(
        message.contains("no PEM block headers are permitted"),
        "{message}"
    );
    c.shutdown().await;
    Ok(())
}
