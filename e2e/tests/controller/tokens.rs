//! Agents identified by projected ServiceAccount tokens (`--agent-identity token`) against
//! the testbed cluster with the shipped RBAC: the approver (as its own ServiceAccount) has
//! the API server review each token and reads the bound Pod; a token of the agent DaemonSet's
//! Pod on node N makes an agent of N, whatever the agent's facts call itself. Every other
//! token is refused, each with its own metric label: another ServiceAccount's, another
//! audience's, an expired one, one whose Pod was deleted or is not the DaemonSet's, one
//! without a Pod. A stream closes when its token expires; a token seen before costs no
//! second review; the two rules the token path needs (tokenreviews create, pods get) are
//! each needed.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use rubber_stamp_approver::channel::TokenConfig;
use rubber_stamp_approver::metrics::ReasonLabel;
use rubber_stamp_approver::runtime::Listeners;
use rubber_stamp_approver::store::Clock;
use rubber_stamp_core::AttestationLookup as _;
use rubber_stamp_e2e::channel::{TestApprover, approver_config};
use rubber_stamp_e2e::controller::ScriptedAgent;
// The sandbox's own: the agent Pod and token it gives its nodes, used here as attacks too.
use rubber_stamp_e2e::controller::rbac::{rules, without_rule};
use rubber_stamp_e2e::controller::{
    APPROVER_NAMESPACE, ControllerBed, deploy_rbac_yaml, eventually,
};
use rubber_stamp_sandbox::tokens::{create_pod as pod, request_token as token};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WITHIN: Duration = Duration::from_secs(10);
const AGENT: &str = "rubber-stamp-agent";
const AUDIENCE: &str = "rubber-stamp";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 3, last))
}

fn token_config() -> TokenConfig {
    TokenConfig {
        audience: AUDIENCE.to_owned(),
        namespace: APPROVER_NAMESPACE.to_owned(),
        service_account: AGENT.to_owned(),
        daemonset: AGENT.to_owned(),
        max_concurrent_reviews: 4,
        review_timeout: Duration::from_secs(5),
        cache_entries: 64,
        refusal_ttl: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(86_400),
        // Every agent of these tests connects from 127.0.0.1.
        source_burst: 64,
        source_interval: Duration::from_millis(10),
    }
}

/// The cluster (with `rbac`), the agent's ServiceAccount, and an attestation-only approver
/// that accepts tokens only, talking to the API server as its ServiceAccount.
async fn bed(
    rbac: &str,
) -> Result<(ControllerBed, TestApprover, kube::Client), Box<dyn std::error::Error>> {
    bed_at(rbac, SignedDuration::ZERO).await
}

/// The wall clock moved by an offset: the approver's view of time in a test of expiry.
#[derive(Debug)]
struct AheadClock(SignedDuration);

impl Clock for AheadClock {
    fn now(&self) -> Timestamp {
        Timestamp::now() + self.0
    }
}

/// Like [`bed`], with the approver's clock `ahead` of the API server's.
async fn bed_at(
    rbac: &str,
    ahead: SignedDuration,
) -> Result<(ControllerBed, TestApprover, kube::Client), Box<dyn std::error::Error>> {
    bed_with(rbac, ahead, |_| {}).await
}

/// Like [`bed_at`], with `tune` applied to the approver's configuration.
async fn bed_with(
    rbac: &str,
    ahead: SignedDuration,
    tune: impl FnOnce(&mut rubber_stamp_approver::runtime::RunConfig),
) -> Result<(ControllerBed, TestApprover, kube::Client), Box<dyn std::error::Error>> {
    let bed = ControllerBed::start_with_rbac(rbac).await?;
    let admin = bed.cluster.client(&bed.cluster.admin()?).await?;
    // The agent's ServiceAccount comes with the shipped manifests; another workload's too.
    rubber_stamp_sandbox::tokens::ensure_service_account(&admin, "default", "workload").await?;
    let mut run = approver_config(&bed.pki);
    run.grpc.kubelet_cert = false;
    run.grpc.token = Some(token_config());
    tune(&mut run);
    let listeners = Listeners::bind(&run.listen).await?;
    let client = bed.approver_client(None).await?;
    let approver = TestApprover::start_with_clock(
        run,
        listeners,
        Some(client),
        Arc::new(AheadClock(ahead)),
        |_| {},
    )
    .await?;
    Ok((bed, approver, admin))
}

/// The honest token of these tests: the agent DaemonSet's Pod `agent-a` on node `node-a`
/// (created here), audience `rubber-stamp`.
async fn node_a_token(admin: &kube::Client) -> Result<String, Box<dyn std::error::Error>> {
    let agent_pod = pod(
        admin,
        APPROVER_NAMESPACE,
        "agent-a",
        AGENT,
        "node-a",
        Some(AGENT),
    )
    .await?;
    Ok(token(admin, APPROVER_NAMESPACE, AGENT, Some(&agent_pod), AUDIENCE).await?)
}

fn refused(approver: &TestApprover, reason: &'static str) -> u64 {
    approver
        .metrics()
        .grpc
        .refused_streams
        .get_or_create(&ReasonLabel { reason })
        .get()
}

async fn wait_refused(approver: &TestApprover, reason: &'static str) -> TestResult {
    eventually(&format!("a stream refused for {reason}"), WITHIN, || {
        refused(approver, reason) > 0
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_daemonset_pods_token_makes_an_agent_of_its_node_and_no_other_token_does() -> TestResult {
    let (bed, approver, admin) = bed(&deploy_rbac_yaml()?).await?;
    let endpoints = [approver.addrs.grpc];
    let agent_pod = pod(
        &admin,
        APPROVER_NAMESPACE,
        "agent-a",
        AGENT,
        "node-a",
        Some(AGENT),
    )
    .await?;
    let honest = token(
        &admin,
        APPROVER_NAMESPACE,
        AGENT,
        Some(&agent_pod),
        AUDIENCE,
    )
    .await?;

    // The facts call the host "impostor"; the node is the token's.
    let agent = ScriptedAgent::connect_with_token(
        &bed.pki,
        "impostor",
        &endpoints,
        &[(ip(1), 24)],
        &honest,
    )
    .await?;
    agent.report().await?;
    let held = approver
        .store()
        .attestation("node-a")
        .ok_or("node-a is not attested")?;
    assert_eq!(
        held.hostname.as_str(),
        "impostor",
        "the facts are the agent's word"
    );
    assert!(approver.store().attestation("impostor").is_none());
    let reviews = approver.metrics().grpc.token_reviews.get();
    assert_eq!(reviews, 1);
    // A second stream with the same token (a reconnect) costs no review.
    let again =
        ScriptedAgent::connect_with_token(&bed.pki, "node-a", &endpoints, &[(ip(1), 24)], &honest)
            .await?;
    again.report().await?;
    assert_eq!(approver.metrics().grpc.token_reviews.get(), reviews);
    drop((agent, again));

    // Another ServiceAccount's genuine token for our audience (root on a node can read any
    // Pod's projected token there).
    let workload = pod(&admin, "default", "workload-a", "workload", "node-a", None).await?;
    let foreign = token(&admin, "default", "workload", Some(&workload), AUDIENCE).await?;
    // The agent ServiceAccount's token for the API server's audience.
    let api_audience = token(
        &admin,
        APPROVER_NAMESPACE,
        AGENT,
        Some(&agent_pod),
        "https://kubernetes.default.svc.cluster.local",
    )
    .await?;
    // The agent ServiceAccount's token bound to a Pod no DaemonSet controls.
    let stray_pod = pod(&admin, APPROVER_NAMESPACE, "stray", AGENT, "node-b", None).await?;
    let stray = token(
        &admin,
        APPROVER_NAMESPACE,
        AGENT,
        Some(&stray_pod),
        AUDIENCE,
    )
    .await?;
    // Bound to nothing at all.
    let unbound = token(&admin, APPROVER_NAMESPACE, AGENT, None, AUDIENCE).await?;
    // Bound to an agent Pod that is then deleted.
    let doomed_pod = pod(
        &admin,
        APPROVER_NAMESPACE,
        "agent-c",
        AGENT,
        "node-c",
        Some(AGENT),
    )
    .await?;
    let doomed = token(
        &admin,
        APPROVER_NAMESPACE,
        AGENT,
        Some(&doomed_pod),
        AUDIENCE,
    )
    .await?;
    Api::<Pod>::namespaced(admin.clone(), APPROVER_NAMESPACE)
        .delete("agent-c", &DeleteParams::default())
        .await?;
    // One character in the middle of the signature (the last one's low bits may be unused
    // padding bits that Go's base64 decoder, and so the API server, ignores).
    let signature_at = honest.rfind('.').ok_or("not a JWT")? + 10;
    let mut tampered = honest.clone().into_bytes();
    tampered[signature_at] = if tampered[signature_at] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered = String::from_utf8(tampered)?;

    for (what, token, reason) in [
        (
            "another ServiceAccount's",
            foreign.as_str(),
            "token_service_account",
        ),
        ("the API server's audience", &api_audience, "token_audience"),
        ("a Pod no DaemonSet controls", &stray, "token_not_agent_pod"),
        ("no Pod", &unbound, "token_not_pod_bound"),
        ("a deleted Pod", &doomed, "token_unauthenticated"),
        ("a tampered signature", &tampered, "token_unauthenticated"),
        ("not a JWT", "not-a-jwt", "token_malformed"),
    ] {
        let before = refused(&approver, reason);
        let agent =
            ScriptedAgent::connect_with_token(&bed.pki, "x", &endpoints, &[(ip(9), 24)], token)
                .await?;
        agent.release();
        eventually(&format!("{what}: refused ({reason})"), WITHIN, || {
            refused(&approver, reason) > before
        })
        .await?;
    }
    for node in ["node-b", "node-c", "x"] {
        assert!(
            approver.store().attestation(node).is_none(),
            "{node} was attested with a refused token"
        );
    }
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn each_rule_of_the_token_path_is_needed() -> TestResult {
    let yaml = deploy_rbac_yaml()?;
    let token_rules: Vec<_> = rules(&yaml)?
        .into_iter()
        .filter(|r| {
            r.resources
                .iter()
                .any(|r| r == "tokenreviews" || r == "pods")
        })
        .collect();
    assert_eq!(token_rules.len(), 2, "{token_rules:#?}");
    for rule in &token_rules {
        let (bed, approver, admin) = bed(&without_rule(&yaml, rule)?).await?;
        let honest = node_a_token(&admin).await?;
        let agent = ScriptedAgent::connect_with_token(
            &bed.pki,
            "node-a",
            &[approver.addrs.grpc],
            &[(ip(1), 24)],
            &honest,
        )
        .await?;
        agent.release();
        wait_refused(&approver, "token_review_failed").await?;
        assert!(
            approver.store().attestation("node-a").is_none(),
            "attested without {}",
            rule.summary
        );
        approver.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_expired_token_is_refused_and_a_stream_ends_when_its_token_expires() -> TestResult {
    // The approver's clock 3590 s ahead of the API server's: a one-hour token has 10 s left
    // (enough for a busy machine to open the stream first).
    let (bed, approver, admin) =
        bed_at(&deploy_rbac_yaml()?, SignedDuration::from_secs(3590)).await?;
    let short = node_a_token(&admin).await?;
    let agent = ScriptedAgent::connect_with_token(
        &bed.pki,
        "node-a",
        &[approver.addrs.grpc],
        &[(ip(1), 24)],
        &short,
    )
    .await?;
    agent.report().await?;
    let closed = || {
        approver
            .metrics()
            .grpc
            .closed_streams
            .get_or_create(&ReasonLabel {
                reason: "credential_expired",
            })
            .get()
    };
    eventually(
        "the stream to end with its token",
        Duration::from_secs(30),
        || closed() > 0,
    )
    .await?;
    // The agent reconnects with the same, now expired, token: refused before any review.
    let reviews = approver.metrics().grpc.token_reviews.get();
    wait_refused(&approver, "token_expired").await?;
    assert_eq!(approver.metrics().grpc.token_reviews.get(), reviews);
    approver.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_connection_without_a_certificate_is_closed_unless_a_token_is_verified_in_time()
-> TestResult {
    // Long enough for the honest agent's review on a busy machine (its connection must be
    // verified within it), short enough to wait for the idle one's closing.
    let unverified = Duration::from_secs(3);
    let (bed, approver, admin) = bed_with(&deploy_rbac_yaml()?, SignedDuration::ZERO, |run| {
        run.grpc.connections.unverified_timeout = unverified;
    })
    .await?;
    let closed = |approver: &TestApprover| {
        approver
            .metrics()
            .grpc
            .refused_connections
            .get_or_create(&ReasonLabel {
                reason: "unverified_timeout",
            })
            .get()
    };
    // An honest agent's connection outlives the deadline: its stream was verified.
    let honest = node_a_token(&admin).await?;
    let agent = ScriptedAgent::connect_with_token(
        &bed.pki,
        "node-a",
        &[approver.addrs.grpc],
        &[(ip(1), 24)],
        &honest,
    )
    .await?;
    agent.report().await?;
    // A stranger completes the TLS handshake without a certificate and opens no stream.
    let idle = rubber_stamp_e2e::channel::raw::connect(&bed.pki, approver.addrs.grpc, None).await?;
    eventually("the idle connection to be closed", WITHIN, || {
        closed(&approver) == 1
    })
    .await?;
    drop(idle);
    // Well past the deadline, the agent's stream is the one it opened: still acknowledged.
    agent.report().await?;
    assert_eq!(closed(&approver), 1, "the verified connection stays open");
    assert_eq!(approver.store().live_streams().len(), 1);
    approver.stop().await?;
    Ok(())
}
