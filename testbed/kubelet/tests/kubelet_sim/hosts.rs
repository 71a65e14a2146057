//! The kubelet simulator binary inside a simulated host: it discovers the
//! host's hostname and addresses, reuses the certificate in its cert dir, and
//! serves it on the kubelet port 10250 of the host's own addresses, where a
//! client in the root namespace verifies it against the cluster CA and the
//! node's IP (CIS 1.2.5's point); SIGTERM stops it cleanly.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateSigningRequestParams, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rubber_stamp_hosts::{self as hosts, Network};
use rubber_stamp_kubelet_sim::{self as kubelet, CertDir, NodeIdentity, ServingRequest};
use rubber_stamp_testkit::pki::Ca;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::KUBELET_SIM;
const STEP: Duration = Duration::from_secs(10);

fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
                .expect("CA PEM"),
        )
        .expect("root");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// `GET /healthz` at `ip:10250`, verifying the certificate for `name`.
async fn healthz(ip: IpAddr, name: IpAddr, ca: &Ca) -> std::io::Result<String> {
    let tcp = TcpStream::connect(SocketAddr::new(ip, kubelet::DEFAULT_PORT)).await?;
    let connector = tokio_rustls::TlsConnector::from(client_config(ca));
    let mut tls = tokio::time::timeout(
        STEP,
        connector.connect(ServerName::IpAddress(name.into()), tcp),
    )
    .await
    .map_err(std::io::Error::other)??;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(STEP, tls.read_to_end(&mut out))
        .await
        .map_err(std::io::Error::other)??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn kubelet_sim_in_a_host_serves_a_verifiable_certificate_on_its_addresses() {
    if !hosts::available_or_skip("kubelet_sim_in_a_host_serves") {
        return;
    }
    let (_net, hosts) = Network::with_hosts(&["kube-node", "neighbour"]).expect("network");
    let (host, neighbour) = (&hosts[0], &hosts[1]);
    let ca = Ca::new("cluster-ca").expect("ca");
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write_cert(tmp.path(), "ca").expect("ca file");
    let (_, _, client) = ca
        .node_client(host.hostname())
        .expect("client cert")
        .write(tmp.path(), "client")
        .expect("write");

    // The certificate a previous run was issued for exactly this node.
    let id = NodeIdentity::new(
        host.hostname(),
        host.hostname(),
        &[host.ipv4().into(), host.ipv6().into()],
    )
    .expect("identity");
    let req = ServingRequest::generate(&id).expect("request");
    let mut params = CertificateSigningRequestParams::from_pem(req.csr_pem()).expect("csr");
    let now = time::OffsetDateTime::now_utc();
    params.params.not_before = now - time::Duration::hours(1);
    params.params.not_after = now + time::Duration::days(1);
    params.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let issued = params.signed_by(ca.issuer()).expect("sign").pem();
    let cert = kubelet::verify_issued(&req, &issued).expect("issued cert fits");
    let cert_dir = tmp.path().join("pki");
    CertDir::new(&cert_dir).store(&cert).expect("store");

    // No --node-name, --hostname-override or --node-ip: all discovered in
    // the host. The API server URL is never contacted when reusing.
    let mut cmd = Command::new(KUBELET_SIM);
    cmd.args(["--server", "https://127.0.0.1:9"])
        .arg("--ca-file")
        .arg(&ca_file)
        .arg("--client-cert")
        .arg(&client)
        .arg("--cert-dir")
        .arg(&cert_dir);
    let mut sim = host.spawn("kubelet-sim", &cmd).expect("spawn");
    let stdout = sim
        .wait_for_stdout("serving HTTPS on", STEP)
        .await
        .expect("serving");
    assert!(
        stdout.contains("using existing serving certificate"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("kubelet-sim[{}]", host.hostname())),
        "{stdout}"
    );

    for addr in [IpAddr::from(host.ipv4()), IpAddr::from(host.ipv6())] {
        let ok = healthz(addr, addr, &ca)
            .await
            .expect("verified for the node IP");
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("ok"), "{ok}");
    }
    // Verified for the neighbour's IP instead: refused.
    let err = healthz(host.ipv4().into(), neighbour.ipv4().into(), &ca)
        .await
        .expect_err("not the neighbour's certificate");
    assert!(err.to_string().contains("certificate"), "{err}");

    let status = sim.stop(STEP).await.expect("stop");
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    assert!(sim.stdout().expect("stdout").contains("stopped"));
}
