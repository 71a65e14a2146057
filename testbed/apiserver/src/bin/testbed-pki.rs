//! `testbed-pki`: writes the attested channel's test PKI into a directory, for running the
//! approver and agent binaries by hand (see docs/attestation-channel.md).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Parser;
use rubber_stamp_testkit::pki::Ca;

/// Writes a cluster CA (signs kubelet client certificates), an approver serving CA, an
/// approver serving certificate and kubelet-shaped node client certificates.
///
/// Existing CAs in DIR are reused, so running it again adds nodes under the same CAs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "testbed-pki")]
    dir: PathBuf,

    /// Node to issue a client certificate for (`CN=system:node:<NODE>`, `O=system:nodes`),
    /// written as `node-<NODE>.pem` (certificate and key in one file, like the kubelet's)
    /// plus `.crt` and `.key`. Repeatable.
    #[arg(long = "node", default_values_t = ["worker-1".to_owned()])]
    nodes: Vec<String>,

    /// Extra DNS name in the approver's serving certificate (it always has `localhost`).
    /// Repeatable.
    #[arg(long = "server-name")]
    server_names: Vec<String>,

    /// Extra IP in the approver's serving certificate (it always has 127.0.0.1 and ::1).
    /// Repeatable.
    #[arg(long = "server-ip")]
    server_ips: Vec<IpAddr>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let cluster = load_or_create(&args.dir, "cluster-ca", "testbed-cluster-ca")?;
    let serving = load_or_create(&args.dir, "serving-ca", "testbed-approver-serving-ca")?;

    let mut names = vec!["localhost"];
    names.extend(args.server_names.iter().map(String::as_str));
    let mut ips: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    ips.extend(&args.server_ips);
    let server = serving.server(&names, &ips)?;
    server.write(&args.dir, "approver")?;
    println!(
        "approver serving certificate: {}/approver.crt, key approver.key (names {names:?}, IPs {ips:?})",
        args.dir.display()
    );

    for node in &args.nodes {
        let leaf = cluster.node_client(node)?;
        let (_, _, combined) = leaf.write(&args.dir, &format!("node-{node}"))?;
        println!("node {node}: {}", combined.display());
    }
    println!(
        "cluster CA (approver --client-ca): {}/cluster-ca.crt",
        args.dir.display()
    );
    println!(
        "serving CA (agent --approver-ca): {}/serving-ca.crt",
        args.dir.display()
    );
    Ok(())
}

fn load_or_create(dir: &Path, stem: &str, common_name: &str) -> anyhow::Result<Ca> {
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    if cert.exists() && key.exists() {
        let cert_pem = std::fs::read_to_string(&cert)
            .with_context(|| format!("reading {}", cert.display()))?;
        let key_pem =
            std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
        return Ca::from_pem(&cert_pem, &key_pem)
            .with_context(|| format!("loading {}", cert.display()));
    }
    let ca = Ca::new(common_name)?;
    ca.write_cert(dir, stem)?;
    std::fs::write(&key, ca.key_pem()).with_context(|| format!("writing {}", key.display()))?;
    Ok(ca)
}
