//! The secure admin port (`--admin-secure`, the default) against the testbed cluster with
//! the shipped RBAC: HTTPS with the attestation port's certificate; a caller without a
//! token, or with one the API server does not know, gets 401; an authenticated caller
//! without the permission 403; `rubber-stamp:metrics-reader` reads `/metrics` and nothing
//! else, `rubber-stamp:attestation-reader` reads `/attestations` and `/streams`. Plain HTTP
//! gets no answer, and the approver asks the API server once per caller and path.

use std::sync::Arc;
use std::time::Duration;

use rubber_stamp_approver::admin::auth::{AdminAuthConfig, AdminSecurity};
use rubber_stamp_approver::metrics::ResultLabel;
use rubber_stamp_approver::runtime::Listeners;
use rubber_stamp_approver::store::SystemClock;
use rubber_stamp_e2e::channel::{TestApprover, approver_config};
use rubber_stamp_e2e::controller::{ControllerBed, deploy_rbac_yaml};
use rubber_stamp_testkit::channel::SERVER_NAME;
use rubber_stamp_testkit::http::{HttpsClient, http_get, https_get};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A ServiceAccount's token, bound cluster-wide to `role` when given.
fn caller(
    bed: &ControllerBed,
    namespace: &str,
    name: &str,
    role: Option<&str>,
) -> Result<String, Box<dyn std::error::Error>> {
    if namespace != "default" {
        bed.cluster.load_yaml(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"
        ))?;
    }
    let creds = bed.cluster.service_account(namespace, name)?;
    if let Some(role) = role {
        bed.cluster.load_yaml(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {name}-{}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {role}
subjects:
  - kind: ServiceAccount
    name: {name}
    namespace: {namespace}
",
            role.replace(':', "-")
        ))?;
    }
    match creds.auth {
        rubber_stamp_apiserver::Auth::Token(token) => Ok(token),
        _ => Err("a ServiceAccount's credential is a token".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_authorized_callers_read_the_admin_port() -> TestResult {
    let bed = ControllerBed::start_with_rbac(&deploy_rbac_yaml()?).await?;
    let mut run = approver_config(&bed.pki);
    run.admin = AdminSecurity::Kubernetes(AdminAuthConfig {
        allowed_ttl: Duration::from_secs(60),
        max_concurrent_reviews: 4,
        review_timeout: Duration::from_secs(10),
    });
    let listeners = Listeners::bind(&run.listen).await?;
    let client = bed.approver_client(None).await?;
    let approver =
        TestApprover::start_with_clock(run, listeners, Some(client), Arc::new(SystemClock), |_| {})
            .await?;
    let admin = approver.addrs.admin;

    let scraper = caller(
        &bed,
        "monitoring",
        "prometheus",
        Some("rubber-stamp:metrics-reader"),
    )?;
    let operator = caller(
        &bed,
        "ops",
        "oncall",
        Some("rubber-stamp:attestation-reader"),
    )?;
    let stranger = caller(&bed, "default", "workload", None)?;

    let as_caller = |token: Option<&str>| HttpsClient {
        ca_pem: bed.pki.serving.cert_pem().to_owned(),
        server_name: SERVER_NAME.to_owned(),
        token: token.map(str::to_owned),
    };
    let get = |path: &'static str, token: Option<String>| {
        let client = as_caller(token.as_deref());
        async move { https_get(admin, path, &client).await }
    };

    // No token, a token the API server does not know: 401 with a Bearer challenge.
    for token in [None, Some("not-a-token".to_owned())] {
        for path in ["/metrics", "/attestations", "/streams"] {
            let (status, body) = get(path, token.clone()).await?;
            assert_eq!(status, 401, "{path} with {token:?}: {body}");
        }
    }
    // Authenticated without the permission: 403, naming what grants it.
    for path in ["/metrics", "/attestations"] {
        let (status, body) = get(path, Some(stranger.clone())).await?;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains(path), "{body}");
    }
    // The scraper reads the metrics only.
    let (status, body) = get("/metrics", Some(scraper.clone())).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("rubber_stamp_build_info"), "{body}");
    for path in ["/attestations", "/streams"] {
        let (status, _) = get(path, Some(scraper.clone())).await?;
        assert_eq!(status, 403, "the metrics reader may not read {path}");
    }
    // The operator reads what the approver knows, not the metrics.
    for path in ["/attestations", "/streams"] {
        let (status, body) = get(path, Some(operator.clone())).await?;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.starts_with('{'), "{path}: {body}");
    }
    let (status, _) = get("/metrics", Some(operator.clone())).await?;
    assert_eq!(status, 403);

    // Answers are reused: a second scrape is not reviewed again.
    let reviews = approver.metrics().admin_reviews.get();
    let (status, _) = get("/metrics", Some(scraper.clone())).await?;
    assert_eq!(status, 200);
    assert_eq!(
        approver.metrics().admin_reviews.get(),
        reviews,
        "answered from the cache"
    );
    for result in ["unauthenticated", "forbidden"] {
        let counted = approver
            .metrics()
            .admin_requests
            .get_or_create(&ResultLabel { result })
            .get();
        assert!(counted > 0, "{result} counted");
    }

    // A path no route serves is 404 before any review: made-up paths cost the API server
    // nothing, whoever asks.
    let reviews = approver.metrics().admin_reviews.get();
    for (path, token) in [
        ("/metrics/", Some(stranger.clone())),
        ("/%6detrics", Some("another-made-up-token".to_owned())),
        ("/debug/pprof", None),
    ] {
        let (status, _) = get(path, token).await?;
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(approver.metrics().admin_reviews.get(), reviews);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = tokio::time::timeout(Duration::from_secs(10), http_get(admin, "/metrics")).await?;
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP must not be served: {plain:?}"
    );
    Ok(())
}
