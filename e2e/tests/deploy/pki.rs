//! The attestation port's PKI against the testbed cluster, always as the approver's
//! ServiceAccount with the RBAC rendered from `deploy/`: two replicas starting at once end
//! with one CA and serve the same chain; a restart reads the Secret; renewal (and a CA
//! rotation, and bring-your-own files) swap the certificate for new connections while an
//! agent's stream keeps getting Acks; every rule the PKI uses is needed; objects it did not
//! create are never overwritten.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use rubber_stamp_agent::identity::IdentitySource;
use rubber_stamp_apiserver::{Cluster, ClusterOptions};
use rubber_stamp_approver::metrics::TlsMetrics;
use rubber_stamp_approver::pki::authority::{self, CertInfo};
use rubber_stamp_approver::pki::plan::{Lifetime, Schedule};
use rubber_stamp_approver::pki::{Bootstrap, PkiConfig, PkiError, SecretPki};
use rubber_stamp_approver::runtime::{RunConfig, TlsSource};
use rubber_stamp_approver::store::Clock;
use rubber_stamp_e2e::channel::{
    self, ChannelPki, FixedResolver, TestAgent, TestApprover, approver_config, wait_for,
};
use rubber_stamp_e2e::deploy::{self, NAMESPACE};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SECRET: &str = "rubber-stamp-approver-tls";
const CONFIG_MAP: &str = "rubber-stamp-ca";
/// What agents dial: `<service>.<namespace>.svc`.
const SERVER_NAME: &str = "rubber-stamp-approver.rubber-stamp.svc";
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);

/// The PKI settings of `run`'s defaults, with a fast refresh and the given schedule.
fn pki_config(schedule: Schedule) -> PkiConfig {
    PkiConfig {
        namespace: NAMESPACE.to_owned(),
        secret: SECRET.to_owned(),
        config_map: CONFIG_MAP.to_owned(),
        service: "rubber-stamp-approver".to_owned(),
        service_namespace: NAMESPACE.to_owned(),
        cluster_domain: "cluster.local".to_owned(),
        schedule,
        refresh_interval: Duration::from_millis(200),
    }
}

/// `run`'s default lifetimes: CA 5 years (renewed 1 year ahead), serving 90 days (30).
fn default_schedule() -> Schedule {
    Schedule {
        ca: Lifetime {
            validity: 1825 * DAY,
            renew_before: 365 * DAY,
        },
        serving: Lifetime {
            validity: 90 * DAY,
            renew_before: 30 * DAY,
        },
        propagation: HOUR,
    }
}

/// A testbed cluster with the rendered RBAC, and clients for the approver's ServiceAccount
/// and the admin.
async fn cluster() -> Result<(Cluster, kube::Client, kube::Client), Box<dyn std::error::Error>> {
    channel::install_crypto_provider();
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let creds = deploy::load_rendered_rbac(&cluster)?;
    let approver = cluster.client(&creds).await?;
    let admin = cluster.client(&cluster.admin()?).await?;
    Ok((cluster, approver, admin))
}

fn secret_mode(pki: &ChannelPki, config: PkiConfig) -> RunConfig {
    RunConfig {
        tls: TlsSource::Secret {
            client_ca: Some(pki.cluster_ca.clone()),
            pki: config,
        },
        ..approver_config(pki)
    }
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

fn bundle(cm: &ConfigMap) -> Option<String> {
    cm.data.as_ref()?.get("ca.crt").cloned()
}

fn cert_info(pem: &str) -> Result<CertInfo, Box<dyn std::error::Error>> {
    Ok(authority::read_cert(pem, "test")?)
}

fn der(pem: &str) -> Result<CertificateDer<'static>, Box<dyn std::error::Error>> {
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?)
}

/// Opens a new mTLS connection to `addr` trusting only `bundle_pem`, verifying
/// `server_name`, with a valid node certificate; returns the leaf the server presented.
async fn served_leaf(
    pki: &ChannelPki,
    addr: SocketAddr,
    bundle_pem: &str,
    server_name: &str,
) -> Result<CertificateDer<'static>, Box<dyn std::error::Error>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let client = pki.node("probe")?;
    let chain = vec![CertificateDer::from(client.cert_der.clone())];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        connector.connect(ServerName::try_from(server_name.to_owned())?, tcp),
    )
    .await??;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no server certificate")?;
    Ok(leaf)
}

async fn get_secret(admin: &kube::Client) -> Result<Secret, Box<dyn std::error::Error>> {
    Ok(Api::<Secret>::namespaced(admin.clone(), NAMESPACE)
        .get(SECRET)
        .await?)
}

async fn get_config_map(admin: &kube::Client) -> Result<ConfigMap, Box<dyn std::error::Error>> {
    Ok(Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE)
        .get(CONFIG_MAP)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_starting_at_once_share_one_ca_and_a_restart_reads_it() -> TestResult {
    let (cluster, approver, admin) = cluster().await?;
    let pki = ChannelPki::new()?;
    let config = secret_mode(&pki, pki_config(default_schedule()));
    // Every API call takes 300 ms: both replicas read "no Secret" before either creates it,
    // so one create wins and the other gets 409 and reads the winner's.
    cluster.faults().set_latency(Duration::from_millis(300));
    let (a, b) = tokio::join!(
        TestApprover::start_with_kube(config.clone(), approver.clone()),
        TestApprover::start_with_kube(config.clone(), approver.clone()),
    );
    let (a, b) = (a?, b?);
    cluster.faults().clear();

    let secret = get_secret(&admin).await?;
    let ca = text(&secret, "ca.crt").ok_or("ca.crt")?;
    let leaf = text(&secret, "tls.crt").ok_or("tls.crt")?;
    assert_eq!(ca.matches("BEGIN CERTIFICATE").count(), 1);
    let published = bundle(&get_config_map(&admin).await?).ok_or("bundle")?;
    assert_eq!(published.trim_end(), ca.trim_end());
    // Both replicas present the Secret's certificate, verified against the published bundle
    // under the Service name agents dial.
    for replica in [&a, &b] {
        assert_eq!(replica.serving().leaf(), Some(der(&leaf)?));
        let served = served_leaf(&pki, replica.addrs.grpc, &published, SERVER_NAME).await?;
        assert_eq!(served, der(&leaf)?);
    }
    let names = cert_info(&leaf)?.dns_names;
    assert_eq!(
        names,
        [
            "rubber-stamp-approver",
            "rubber-stamp-approver.rubber-stamp",
            "rubber-stamp-approver.rubber-stamp.svc",
            "rubber-stamp-approver.rubber-stamp.svc.cluster.local"
        ]
    );

    // A restarted replica reads what is there and writes nothing.
    let secret_version = secret.metadata.resource_version.clone();
    let cm_version = get_config_map(&admin).await?.metadata.resource_version;
    a.stop().await?;
    let restarted = TestApprover::start_with_kube(config, approver).await?;
    assert_eq!(restarted.serving().leaf(), Some(der(&leaf)?));
    let served = served_leaf(&pki, restarted.addrs.grpc, &published, SERVER_NAME).await?;
    assert_eq!(served, der(&leaf)?);
    assert_eq!(
        get_secret(&admin).await?.metadata.resource_version,
        secret_version
    );
    assert_eq!(
        get_config_map(&admin).await?.metadata.resource_version,
        cm_version
    );
    restarted.stop().await?;
    b.stop().await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_race_has_one_winner_and_the_loser_adopts_its_ca() -> TestResult {
    let (cluster, approver, _admin) = cluster().await?;
    let config = pki_config(default_schedule());
    let clock: Arc<dyn Clock> = Arc::new(rubber_stamp_approver::store::SystemClock);
    cluster.faults().set_latency(Duration::from_millis(300));
    let (a, b) = tokio::join!(
        SecretPki::bootstrap(
            approver.clone(),
            config.clone(),
            clock.clone(),
            TlsMetrics::default()
        ),
        SecretPki::bootstrap(
            approver.clone(),
            config.clone(),
            clock.clone(),
            TlsMetrics::default()
        ),
    );
    cluster.faults().clear();
    let ((a, how_a), (b, how_b)) = (a?, b?);
    let mut outcomes = [how_a, how_b];
    outcomes.sort_by_key(|h| format!("{h:?}"));
    assert_eq!(outcomes, [Bootstrap::Created, Bootstrap::Raced]);
    assert_eq!(a.serving().leaf(), b.serving().leaf());
    // A third, later, simply adopts.
    let (c, how) = SecretPki::bootstrap(approver, config, clock, TlsMetrics::default()).await?;
    assert_eq!(how, Bootstrap::Adopted);
    assert_eq!(c.serving().leaf(), a.serving().leaf());
    cluster.shutdown().await;
    Ok(())
}

/// Writes the published bundle where an agent reads it, as the kubelet does for a
/// ConfigMap volume.
async fn sync_bundle(
    admin: &kube::Client,
    path: &Path,
) -> Result<String, Box<dyn std::error::Error>> {
    let published = bundle(&get_config_map(admin).await?).ok_or("bundle")?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &published)?;
    std::fs::rename(&tmp, path)?;
    Ok(published)
}

/// Starts an agent for `node` that dials `approver` verifying `server_name` with the bundle
/// at `ca`, and waits until a report of it is stored; returns the agent and its stream id.
async fn attested_agent(
    pki: &ChannelPki,
    approver: &TestApprover,
    node: &str,
    server_name: &str,
    ca: &Path,
) -> Result<(TestAgent, u64), Box<dyn std::error::Error>> {
    let identity = pki.write_combined(&pki.node(node)?, node)?;
    let mut config =
        channel::agent_config(pki, approver.addrs.grpc, IdentitySource::Combined(identity));
    config.server_name = server_name.to_owned();
    config.approver_ca = ca.to_owned();
    let agent = TestAgent::start(config, FixedResolver::new([approver.addrs.grpc])).await?;
    wait_for(
        "the agent's first report",
        Duration::from_secs(15),
        || async move {
            approver
                .store()
                .live_streams()
                .iter()
                .any(|s| s.node.as_str() == node)
        },
    )
    .await?;
    let stream = stream_id(approver, node).ok_or("stream")?;
    Ok((agent, stream))
}

fn stream_id(approver: &TestApprover, node: &str) -> Option<u64> {
    approver
        .store()
        .live_streams()
        .iter()
        .find(|s| s.node.as_str() == node)
        .map(|s| s.id)
}

/// Waits until the approver accepted `more` reports past now, on the same stream.
async fn acks_continue_on(
    approver: &TestApprover,
    node: &str,
    stream: u64,
    more: u64,
) -> TestResult {
    let start = approver.metrics().grpc.reports_accepted.get();
    wait_for(
        "more reports on the same stream",
        Duration::from_secs(15),
        || async move { approver.metrics().grpc.reports_accepted.get() >= start + more },
    )
    .await?;
    assert_eq!(
        stream_id(approver, node),
        Some(stream),
        "the agent's stream was replaced"
    );
    assert_eq!(approver.metrics().grpc.live_streams.get(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewal_swaps_the_certificate_for_new_connections_while_streams_continue() -> TestResult {
    let (cluster, approver_client, admin) = cluster().await?;
    let (admin, pki) = (&admin, &ChannelPki::new()?);
    // A serving certificate is due three seconds after it is issued.
    let schedule = Schedule {
        serving: Lifetime {
            validity: HOUR,
            renew_before: HOUR - Duration::from_secs(3),
        },
        ..default_schedule()
    };
    let approver =
        TestApprover::start_with_kube(secret_mode(pki, pki_config(schedule)), approver_client)
            .await?;
    let grpc = approver.addrs.grpc;
    let ca_file = pki.dir().join("approver-ca.crt");
    let published = &sync_bundle(admin, &ca_file).await?;
    let (agent, stream) = attested_agent(pki, &approver, "worker-1", SERVER_NAME, &ca_file).await?;
    let first = &served_leaf(pki, grpc, published, SERVER_NAME).await?;
    assert_eq!(Some(first), approver.serving().leaf().as_ref());

    // Renewed: the Secret holds a new certificate and new handshakes get it.
    wait_for(
        "a renewed certificate in the Secret",
        Duration::from_secs(20),
        || async move {
            get_secret(admin)
                .await
                .ok()
                .and_then(|s| text(&s, "tls.crt"))
                .and_then(|pem| der(&pem).ok())
                .is_some_and(|d| d != *first)
        },
    )
    .await?;
    wait_for(
        "a new connection seeing a new certificate",
        Duration::from_secs(20),
        || async move {
            served_leaf(pki, grpc, published, SERVER_NAME)
                .await
                .is_ok_and(|leaf| leaf != *first)
        },
    )
    .await?;
    let secret_leaf = text(&get_secret(admin).await?, "tls.crt").ok_or("tls.crt")?;
    assert!(authority::signed_by(
        &cert_info(&secret_leaf)?,
        &cert_info(published)?
    ));
    assert!(approver.metrics().tls.swaps.get() >= 1);
    // Same CA, same bundle: agents need nothing new.
    assert_eq!(&sync_bundle(admin, &ca_file).await?, published);
    // The agent's stream from before the renewal is still the one in use and keeps
    // getting Acks (heartbeats every 500 ms).
    acks_continue_on(&approver, "worker-1", stream, 3).await?;
    assert_eq!(
        agent.readiness().await?,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    agent.stop().await?;
    approver.stop().await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ca_rotation_publishes_old_and_new_before_switching() -> TestResult {
    let (cluster, approver_client, admin) = cluster().await?;
    let (admin, pki) = (&admin, &ChannelPki::new()?);
    // A CA is due for rotation two seconds after it is made; its successor signs one second
    // after the bundle with it was published.
    let schedule = Schedule {
        ca: Lifetime {
            validity: HOUR,
            renew_before: HOUR - Duration::from_secs(2),
        },
        serving: Lifetime {
            validity: 30 * 60 * Duration::from_secs(1),
            renew_before: 10 * 60 * Duration::from_secs(1),
        },
        propagation: Duration::from_secs(1),
    };
    let approver =
        TestApprover::start_with_kube(secret_mode(pki, pki_config(schedule)), approver_client)
            .await?;
    let grpc = approver.addrs.grpc;
    let ca_file = &pki.dir().join("approver-ca.crt");
    let original_bundle = sync_bundle(admin, ca_file).await?;
    let original_ca = &cert_info(&original_bundle)?;
    let (agent, stream) = attested_agent(pki, &approver, "worker-1", SERVER_NAME, ca_file).await?;

    // Watch the Secret and the bundle as the kubelet would (copying it to the agent's file).
    let mut saw_overlap = false;
    let mut promoted = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while promoted.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no CA rotation within 30 s"
        );
        let secret = get_secret(admin).await?;
        let published = sync_bundle(admin, ca_file).await?;
        let ca = cert_info(&text(&secret, "ca.crt").ok_or("ca.crt")?)?;
        let leaf = cert_info(&text(&secret, "tls.crt").ok_or("tls.crt")?)?;
        // Invariant: what the Secret serves always chains to a CA in the stored bundle.
        assert!(authority::signed_by(&leaf, &ca));
        if ca == *original_ca && text(&secret, "ca-next.crt").is_some() {
            // Successor generated: the current CA still signs.
            saw_overlap = saw_overlap || published.matches("BEGIN CERTIFICATE").count() == 2;
        }
        if ca != *original_ca
            && text(&secret, "ca-previous.crt")
                .is_some_and(|p| cert_info(&p).is_ok_and(|p| p == *original_ca))
        {
            promoted = Some((published, leaf));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        saw_overlap,
        "the successor was never published next to the current CA"
    );
    let (published, leaf) = promoted.ok_or("promoted")?;
    // The old CA is still in the published bundle while the new one signs.
    assert!(published.contains(original_bundle.trim_end()));
    assert!(!authority::signed_by(&leaf, original_ca));

    // New connections verify with the current bundle; with only the original CA they would
    // not: that is what the overlap is for.
    wait_for(
        "the replica serving the new CA's certificate",
        Duration::from_secs(10),
        || async move {
            let Ok(current) = sync_bundle(admin, ca_file).await else {
                return false;
            };
            served_leaf(pki, grpc, &current, SERVER_NAME)
                .await
                .is_ok_and(|served| {
                    cert_info_der(&served).is_some_and(|s| !authority::signed_by(&s, original_ca))
                })
        },
    )
    .await?;
    assert!(
        served_leaf(pki, grpc, &original_bundle, SERVER_NAME)
            .await
            .is_err()
    );
    // The agent connected before the rotation never had to reconnect, and a new agent
    // with the multi-CA bundle attests too.
    acks_continue_on(&approver, "worker-1", stream, 2).await?;
    sync_bundle(admin, ca_file).await?;
    let (late, _) = attested_agent(pki, &approver, "worker-2", SERVER_NAME, ca_file).await?;

    late.stop().await?;
    agent.stop().await?;
    approver.stop().await?;
    cluster.shutdown().await;
    Ok(())
}

fn cert_info_der(der: &CertificateDer<'_>) -> Option<CertInfo> {
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der.as_ref())
    );
    authority::read_cert(&pem, "served").ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bring_your_own_files_are_reloaded_while_streams_continue() -> TestResult {
    let pki = &ChannelPki::new()?;
    let mut config = approver_config(pki);
    let TlsSource::Files {
        reload_interval, ..
    } = &mut config.tls
    else {
        return Err("approver_config uses files".into());
    };
    *reload_interval = Duration::from_millis(100);
    let approver = &TestApprover::start(config).await?;
    let grpc = approver.addrs.grpc;
    let (agent, stream) = attested_agent(
        pki,
        approver,
        "worker-1",
        channel::SERVER_NAME,
        &pki.serving_ca,
    )
    .await?;
    let serving_ca = &std::fs::read_to_string(&pki.serving_ca)?;
    let first = served_leaf(pki, grpc, serving_ca, channel::SERVER_NAME).await?;
    assert_eq!(first.as_ref(), pki.server.cert_der.as_slice());

    // A mismatched pair (cert-manager mid-write, an operator's mistake) is not taken.
    let other = pki.serving.server(&[channel::SERVER_NAME], &[])?;
    let stray = pki.serving.server(&[channel::SERVER_NAME], &[])?;
    replace_file(&pki.server_cert, &other.cert_pem)?;
    replace_file(&pki.server_key, &stray.key_pem)?;
    wait_for(
        "the mismatch counted",
        Duration::from_secs(10),
        || async move { approver.metrics().tls.refresh_errors("key_mismatch") >= 1 },
    )
    .await?;
    let still = served_leaf(pki, grpc, serving_ca, channel::SERVER_NAME).await?;
    assert_eq!(still, first);

    // The matching key arrives: new handshakes get the new certificate.
    replace_file(&pki.server_key, &other.key_pem)?;
    let expected = other.cert_der.as_slice();
    wait_for(
        "the new certificate served",
        Duration::from_secs(10),
        || async move {
            served_leaf(pki, grpc, serving_ca, channel::SERVER_NAME)
                .await
                .is_ok_and(|leaf| leaf.as_ref() == expected)
        },
    )
    .await?;
    assert_eq!(approver.metrics().tls.swaps.get(), 1);
    acks_continue_on(approver, "worker-1", stream, 3).await?;

    agent.stop().await?;
    approver.request_stop();
    Ok(())
}

/// Replaces a file atomically, as the kubelet updates Secret volumes.
fn replace_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, path)
}

/// A clock the test moves.
#[derive(Debug)]
struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    fn advance(&self, by: Duration) -> Result<(), Failure> {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(jiff::SignedDuration::try_from(by)?)?;
        Ok(())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Every call the PKI makes, as the approver: create the Secret and ConfigMap, repair a
/// stale ConfigMap, renew the serving certificate. Returns the first error.
async fn pki_lifecycle(approver: kube::Client, admin: kube::Client) -> Result<(), Failure> {
    let clock = Arc::new(ManualClock(Mutex::new(Timestamp::now())));
    let (pki, how) = SecretPki::bootstrap(
        approver.clone(),
        pki_config(default_schedule()),
        clock.clone(),
        TlsMetrics::default(),
    )
    .await?;
    assert_eq!(how, Bootstrap::Created);
    let first = pki.serving().leaf();

    // Someone overwrote the bundle: the next refresh puts it back.
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), NAMESPACE);
    let mut cm = cms.get(CONFIG_MAP).await?;
    let good = bundle(&cm);
    cm.data = Some([("ca.crt".to_owned(), "stale".to_owned())].into());
    cms.replace(CONFIG_MAP, &PostParams::default(), &cm).await?;
    assert!(!pki.refresh().await?, "nothing to swap");
    let repaired = cms.get(CONFIG_MAP).await?;
    assert_eq!(bundle(&repaired), good);

    // 61 days later the serving certificate is within its renewal window.
    clock.advance(61 * DAY)?;
    assert!(pki.refresh().await?, "renewed");
    assert_ne!(pki.serving().leaf(), first);

    // Our Secret, copied by hand without its type (so `Opaque`): a replica starting now
    // deletes and creates it again with the right type.
    let secrets: Api<Secret> = Api::namespaced(admin, NAMESPACE);
    let ours = secrets.get(SECRET).await?;
    secrets.delete(SECRET, &DeleteParams::default()).await?;
    let copy = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.to_owned()),
            labels: ours.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        data: ours.data.clone(),
        ..Secret::default()
    };
    secrets.create(&PostParams::default(), &copy).await?;
    let (_, how) = SecretPki::bootstrap(
        approver,
        pki_config(default_schedule()),
        clock,
        TlsMetrics::default(),
    )
    .await?;
    assert_eq!(how, Bootstrap::Adopted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_rbac_suffices_and_every_pki_rule_is_needed() -> TestResult {
    channel::install_crypto_provider();
    // With the RBAC exactly as rendered, the whole lifecycle works as the approver.
    let (cluster, approver, admin) = cluster().await?;
    pki_lifecycle(approver, admin)
        .await
        .map_err(|e| e.to_string())?;
    cluster.shutdown().await;

    // Without any one of the verbs the PKI uses, it fails with 403 on that call.
    let base = deploy::rendered_base()?;
    for (resource, verb, kind) in [
        ("secrets", "get", "Secret"),
        ("secrets", "create", "Secret"),
        ("secrets", "update", "Secret"),
        ("secrets", "delete", "Secret"),
        ("configmaps", "get", "ConfigMap"),
        ("configmaps", "create", "ConfigMap"),
        ("configmaps", "update", "ConfigMap"),
    ] {
        let cluster = Cluster::start(ClusterOptions::default()).await?;
        let reduced = deploy::without_verb(base, "Role", "rubber-stamp:approver", resource, verb);
        assert_ne!(reduced.as_slice(), base, "{resource} {verb} is in the Role");
        let creds = deploy::load_rbac(&cluster, &reduced)?;
        let approver = cluster.client(&creds).await?;
        let admin = cluster.client(&cluster.admin()?).await?;
        let failure = pki_lifecycle(approver, admin)
            .await
            .err()
            .ok_or(format!("the lifecycle passed without {verb} on {resource}"))?;
        let error = failure
            .downcast_ref::<PkiError>()
            .ok_or(format!("{resource} {verb}: not a PKI error: {failure}"))?;
        assert_eq!(error.api_status(), Some(403), "{resource} {verb}: {error}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{verb} {kind} {NAMESPACE}/")),
            "{resource} {verb}: {message}"
        );
        assert!(
            error.is_transient(),
            "403 is retried at start: RBAC may lag the Deployment"
        );
        cluster.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_the_approver_did_not_create_are_not_overwritten() -> TestResult {
    let (cluster, approver, admin) = cluster().await?;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.to_owned()),
            ..ObjectMeta::default()
        },
        string_data: Some([("tls.crt".to_owned(), "someone else's".to_owned())].into()),
        ..Secret::default()
    };
    let created = secrets.create(&PostParams::default(), &foreign).await?;
    let clock: Arc<dyn Clock> = Arc::new(rubber_stamp_approver::store::SystemClock);
    let config = pki_config(default_schedule());
    let error = SecretPki::bootstrap(
        approver.clone(),
        config.clone(),
        clock.clone(),
        TlsMetrics::default(),
    )
    .await
    .err()
    .ok_or("bootstrapped over a foreign Secret")?;
    assert!(
        matches!(error, PkiError::Foreign { kind: "Secret", .. }),
        "{error}"
    );
    assert!(!error.is_transient());
    assert!(
        error.to_string().contains("--tls-cert/--tls-key"),
        "{error}"
    );
    assert_eq!(
        secrets.get(SECRET).await?.metadata.resource_version,
        created.metadata.resource_version
    );

    // One of ours that became unusable is replaced.
    let mut ours = secrets.get(SECRET).await?;
    ours.metadata.labels = Some(
        [(
            "app.kubernetes.io/managed-by".to_owned(),
            "rubber-stamp-approver".to_owned(),
        )]
        .into(),
    );
    secrets
        .replace(SECRET, &PostParams::default(), &ours)
        .await?;
    let (pki, how) = SecretPki::bootstrap(approver, config, clock, TlsMetrics::default()).await?;
    assert_eq!(how, Bootstrap::Created);
    let repaired = secrets.get(SECRET).await?;
    assert_eq!(
        pki.serving().leaf(),
        Some(der(&text(&repaired, "tls.crt").ok_or("tls.crt")?)?)
    );
    cluster.shutdown().await;
    Ok(())
}

/// A Secret of ours whose type is not `kubernetes.io/tls` — here `Opaque`, what the API
/// server defaults a Secret to when a tool leaves the type out — cannot be updated to the
/// right type (422 "field is immutable"). The approver deletes exactly that object and
/// creates it again with the right type, keeping its CA and certificate.
#[tokio::test]
async fn a_secret_of_ours_with_another_type_is_created_again_with_the_same_ca() -> TestResult {
    let (cluster, approver, admin) = cluster().await?;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    let clock: Arc<dyn Clock> = Arc::new(rubber_stamp_approver::store::SystemClock);
    let config = pki_config(default_schedule());
    let (first, how) = SecretPki::bootstrap(
        approver.clone(),
        config.clone(),
        clock.clone(),
        TlsMetrics::default(),
    )
    .await?;
    assert_eq!(how, Bootstrap::Created);
    let original = secrets.get(SECRET).await?;
    secrets.delete(SECRET, &DeleteParams::default()).await?;
    let opaque = secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some(SECRET.to_owned()),
                    labels: original.metadata.labels.clone(),
                    ..ObjectMeta::default()
                },
                data: original.data.clone(),
                ..Secret::default()
            },
        )
        .await?;
    assert_eq!(opaque.type_.as_deref(), Some("Opaque"));

    let (second, how) =
        SecretPki::bootstrap(approver, config, clock, TlsMetrics::default()).await?;
    assert_eq!(how, Bootstrap::Adopted);
    let recreated = secrets.get(SECRET).await?;
    assert_eq!(recreated.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_ne!(recreated.metadata.uid, opaque.metadata.uid);
    assert_eq!(
        recreated.data, original.data,
        "the CA and certificate are kept"
    );
    assert_eq!(second.serving().leaf(), first.serving().leaf());
    cluster.shutdown().await;
    Ok(())
}
