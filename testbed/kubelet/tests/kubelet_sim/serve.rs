//! The kubelet simulator's certificate handling and HTTPS port: a certificate
//! issued for its CSR by a test CA is accepted and served, and a rustls
//! client verifying against that CA accepts it for the node's IP (and
//! hostname) and refuses it for any other; certificates that do not match the
//! key or the request are refused; the certificate directory behaves like
//! the kubelet's; without a usable certificate and no reachable API server
//! it keeps retrying until `--timeout` (exit 6).

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, KeyUsagePurpose,
};
use rubber_stamp_kubelet_sim::{
    self as kubelet, CertDir, KubeletError, NodeIdentity, ServingCertificate, ServingRequest,
};
use rubber_stamp_testkit::pki::Ca;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::KUBELET_SIM;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Signs `csr_pem` the way the kubelet-serving signer does (serverAuth,
/// digital signature, a day of validity), after `tweak`.
fn sign(ca: &Ca, csr_pem: &str, tweak: impl FnOnce(&mut CertificateParams)) -> String {
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).expect("parse CSR");
    let now = OffsetDateTime::now_utc();
    csr.params.not_before = now - time::Duration::hours(1);
    csr.params.not_after = now + time::Duration::days(1);
    csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    csr.params.use_authority_key_identifier_extension = true;
    tweak(&mut csr.params);
    csr.signed_by(ca.issuer()).expect("sign").pem()
}

fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let der =
        rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("CA PEM");
    roots.add(der).expect("add root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// GETs `path` over TLS, verifying the server as `name`; returns the raw
/// HTTP response or the TLS error.
async fn get(
    addr: SocketAddr,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<String, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(std::io::Error::other)??;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .map_err(std::io::Error::other)??;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

#[tokio::test]
async fn issued_certificate_is_served_and_verifies_for_the_node_ip_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = Ca::new("cluster-ca").expect("ca");
    let node_ip = ip("127.0.0.2");
    let id = NodeIdentity::new("node-x", "node-x", &[node_ip]).expect("identity");
    let req = ServingRequest::generate(&id).expect("request");
    let cert = kubelet::verify_issued(&req, &sign(&ca, req.csr_pem(), |_| {})).expect("accepted");

    let listener = TcpListener::bind((node_ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kubelet::serve(
        listener,
        cert.tls_config().expect("tls config"),
        async {
            let _ = stopped.await;
        },
    ));

    let trusting = client_config(&ca);
    let ok = get(
        addr,
        ServerName::IpAddress(node_ip.into()),
        Arc::clone(&trusting),
        "/healthz",
    )
    .await
    .expect("verified against the CA and the node IP");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nok"), "{ok}");
    let by_name = get(
        addr,
        ServerName::try_from("node-x").expect("name"),
        Arc::clone(&trusting),
        "/healthz",
    )
    .await
    .expect("the hostname is a SAN too");
    assert!(by_name.starts_with("HTTP/1.1 200"));
    let missing = get(
        addr,
        ServerName::IpAddress(node_ip.into()),
        Arc::clone(&trusting),
        "/pods",
    )
    .await
    .expect("TLS fine");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // Another node's IP: the certificate does not name it.
    let err = get(
        addr,
        ServerName::IpAddress(ip("127.0.0.3").into()),
        Arc::clone(&trusting),
        "/healthz",
    )
    .await
    .expect_err("not valid for another IP");
    assert!(
        matches!(
            tls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{err:?}"
    );
    // A client that trusts another CA refuses it too.
    let stranger = client_config(&Ca::new("stranger").expect("ca"));
    let err = get(
        addr,
        ServerName::IpAddress(node_ip.into()),
        stranger,
        "/healthz",
    )
    .await
    .expect_err("unknown issuer");
    assert!(
        matches!(
            tls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );

    stop.send(()).expect("server running");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stops on shutdown")
        .expect("task")
        .expect("clean stop");
}

#[test]
fn certificates_that_do_not_match_the_request_are_refused() {
    let ca = Ca::new("cluster-ca").expect("ca");
    let id = NodeIdentity::new("node-y", "node-y", &[ip("198.18.1.2")]).expect("identity");
    let req = ServingRequest::generate(&id).expect("request");
    let other = ServingRequest::generate(&id).expect("request");

    let cases: [(&str, String); 5] = [
        ("public key", sign(&ca, other.csr_pem(), |_| {})),
        (
            "IP SANs",
            sign(&ca, req.csr_pem(), |p| {
                p.subject_alt_names
                    .push(rcgen::SanType::IpAddress(ip("198.18.1.99")))
            }),
        ),
        (
            "DNS SANs",
            sign(&ca, req.csr_pem(), |p| {
                p.subject_alt_names
                    .retain(|s| !matches!(s, rcgen::SanType::DnsName(_)))
            }),
        ),
        (
            "not valid now",
            sign(&ca, req.csr_pem(), |p| {
                let now = OffsetDateTime::now_utc();
                p.not_before = now - time::Duration::days(2);
                p.not_after = now - time::Duration::days(1);
            }),
        ),
        ("certificate", "not a certificate".to_owned()),
    ];
    for (needle, pem) in cases {
        let err = kubelet::verify_issued(&req, &pem).expect_err(needle);
        assert!(matches!(err, KubeletError::Mismatch(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        assert_eq!(err.exit_code(), kubelet::EXIT_MISMATCH);
    }
    assert!(kubelet::verify_issued(&req, &sign(&ca, req.csr_pem(), |_| {})).is_ok());
}

#[test]
fn cert_dir_keeps_certificates_like_the_kubelet_and_reuses_only_fitting_ones() {
    use std::os::unix::fs::PermissionsExt;

    let ca = Ca::new("cluster-ca").expect("ca");
    let id = NodeIdentity::new("node-z", "node-z", &[ip("198.18.2.2")]).expect("identity");
    let req = ServingRequest::generate(&id).expect("request");
    let cert = kubelet::verify_issued(&req, &sign(&ca, req.csr_pem(), |_| {})).expect("ok");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = CertDir::new(tmp.path().join("pki"));
    assert!(dir.load_current().expect("empty dir").is_none());
    let file = dir.store(&cert).expect("store");

    let name = file.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        name.starts_with("kubelet-server-") && name.ends_with(".pem"),
        "{name}"
    );
    assert_eq!(
        std::fs::read_link(dir.current_path()).expect("symlink"),
        std::path::PathBuf::from(name)
    );
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key is private");

    let loaded = dir.load_current().expect("load").expect("present");
    assert_eq!(loaded.facts(), cert.facts());
    let now = jiff::Timestamp::now().as_second();
    loaded.reusable_for(&id, now).expect("fits");
    let moved = NodeIdentity::new("node-z", "node-z", &[ip("198.18.2.3")]).expect("identity");
    assert!(loaded.reusable_for(&moved, now).is_err(), "new IP: new CSR");
    let late = cert.facts().not_after - 60;
    assert!(loaded.reusable_for(&id, late).is_err(), "due for renewal");

    // A key that does not belong to the certificate is refused on load.
    let stray = ServingRequest::generate(&id).expect("request");
    let mixed = format!(
        "{}{}",
        cert.combined_pem()
            .split("-----BEGIN PRIVATE KEY")
            .next()
            .expect("chain"),
        stray.key_pem()
    );
    assert!(ServingCertificate::from_pem(&mixed, &mixed).is_err());
}

#[test]
fn without_api_server_or_usable_certificate_it_retries_until_the_timeout() {
    let ca = Ca::new("cluster-ca").expect("ca");
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write_cert(tmp.path(), "ca").expect("ca file");
    let (_, _, client) = ca
        .node_client("node-w")
        .expect("client cert")
        .write(tmp.path(), "node-w")
        .expect("write");
    // A stored certificate for another address: not reused.
    let old = NodeIdentity::new("node-w", "node-w", &[ip("198.18.3.9")]).expect("identity");
    let req = ServingRequest::generate(&old).expect("request");
    let cert = kubelet::verify_issued(&req, &sign(&ca, req.csr_pem(), |_| {})).expect("ok");
    let cert_dir = tmp.path().join("pki");
    CertDir::new(&cert_dir).store(&cert).expect("store");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();

    let out = Command::new(KUBELET_SIM)
        .args(["--server", &format!("https://127.0.0.1:{port}")])
        .arg("--ca-file")
        .arg(&ca_file)
        .arg("--client-cert")
        .arg(&client)
        .arg("--cert-dir")
        .arg(&cert_dir)
        .args([
            "--node-name",
            "node-w",
            "--hostname-override",
            "node-w",
            "--node-ip",
            "198.18.3.10",
            "--timeout",
            "2",
        ])
        .output()
        .expect("run kubelet-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(i32::from(kubelet::EXIT_TIMEOUT)),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("not reusing"), "{stdout}");
    assert!(stdout.contains("IP SANs"), "says why: {stdout}");
    assert!(stdout.contains("creating the CSR failed"), "{stdout}");
    assert!(stdout.contains("retrying in"), "{stdout}");
}
