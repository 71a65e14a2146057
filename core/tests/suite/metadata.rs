//! Metadata sources (a cloud's instance metadata) backing SANs: what a cloud kubelet asks
//! for — its 1:1-NAT public address and the cloud's DNS names — is approved when the
//! node's agent read them from an accepted source; the policy limits which sources back
//! which SANs; other nodes' metadata counts for uniqueness; an incomplete metadata
//! reading never supports a denial; the denied names and networks still apply.

use rubber_stamp_core::policy::{DnsSuffix, SourcePattern, in_cloud_instance_domain};
use rubber_stamp_core::{
    CheckName, CsrInput, Decision, MetadataFacts, Reason, SourceReport, Verdict,
};

use super::support::{CsrSpec, World, csr_input, ip};

use CheckName as C;

const PUBLIC: &str = "203.0.113.7";
const EXTERNAL_DNS: &str = "ec2-203-0-113-7.compute-1.amazonaws.com";

/// worker-1 as a cloud kubelet asks: its name, its private and public addresses, the
/// cloud's DNS name.
fn cloud_csr() -> CsrInput {
    let spec = CsrSpec::kubelet(
        "worker-1",
        &["worker-1", EXTERNAL_DNS],
        &["10.0.0.11", PUBLIC],
    );
    csr_input("worker-1", &spec.pem())
}

/// worker-1's agent read the AWS metadata: public address and DNS name.
fn with_aws_metadata(world: &mut World) {
    let a = world.attestation_mut("worker-1");
    a.sources.push(SourceReport::complete("cloud:aws"));
    a.metadata.push(MetadataFacts {
        source: "cloud:aws".to_owned(),
        addresses: vec![ip("10.0.0.11"), ip(PUBLIC)],
        dns_names: vec![
            EXTERNAL_DNS.to_owned(),
            "ip-10-0-0-11.ec2.internal".to_owned(),
        ],
    });
}

fn failed(v: &Verdict) -> Vec<(CheckName, Reason)> {
    v.failed()
        .map(|c| (c.name(), c.reason().expect("reason")))
        .collect()
}

fn detail(v: &Verdict, name: CheckName) -> String {
    v.check(name).expect("reported").detail().to_owned()
}

#[test]
fn a_cloud_kubelets_public_address_and_dns_name_are_approved_on_its_metadata() {
    let mut world = World::two_workers();
    with_aws_metadata(&mut world);
    let v = world.decide(&cloud_csr());
    assert_eq!(v.decision(), Decision::Approve, "{:?}", failed(&v));
    assert!(
        detail(&v, C::IpSansAttested).contains("203.0.113.7 (cloud:aws)"),
        "{}",
        detail(&v, C::IpSansAttested)
    );
    assert!(
        detail(&v, C::DnsSansAttested).contains(&format!("{EXTERNAL_DNS} (cloud:aws metadata)")),
        "{}",
        detail(&v, C::DnsSansAttested)
    );
}

#[test]
fn without_metadata_the_same_csr_is_denied_on_complete_fresh_facts() {
    // Today's behaviour on a cloud without the metadata source: the interfaces alone.
    let v = World::two_workers().decide(&cloud_csr());
    assert_eq!(v.decision(), Decision::Deny);
    assert_eq!(
        failed(&v),
        [
            (C::DnsSansAttested, Reason::NameNotAttested),
            (C::IpSansAttested, Reason::AddressNotAttested)
        ]
    );
}

#[test]
fn the_policy_decides_which_sources_back_which_sans() {
    let mut world = World::two_workers();
    with_aws_metadata(&mut world);
    world.policy.metadata_sources.ip_sans = vec![SourcePattern::new("cloud:gcp").expect("pattern")];
    world.policy.metadata_sources.dns_sans = Vec::new();
    let v = world.decide(&cloud_csr());
    assert_eq!(v.decision(), Decision::Deny);
    let ip = detail(&v, C::IpSansAttested);
    assert!(
        ip.contains("203.0.113.7 is only stated by cloud:aws metadata, which the policy's metadataSources.ipSans does not accept"),
        "{ip}"
    );
    let dns = detail(&v, C::DnsSansAttested);
    assert!(
        dns.contains("stated only by metadata the policy does not accept"),
        "{dns}"
    );
}

#[test]
fn a_stated_name_outside_the_clouds_instance_domains_backs_nothing() {
    // Root on a node controls what its agent reads: a metadata service that states the
    // API server's external name must not get it a certificate for that name.
    let mut world = World::two_workers();
    with_aws_metadata(&mut world);
    world.attestation_mut("worker-1").metadata[0]
        .dns_names
        .push("api.prod.example.com".to_owned());
    let spec = CsrSpec::kubelet(
        "worker-1",
        &["worker-1", "api.prod.example.com"],
        &["10.0.0.11"],
    );
    let v = world.decide(&csr_input("worker-1", &spec.pem()));
    assert_eq!(v.decision(), Decision::Deny);
    assert_eq!(failed(&v), [(C::DnsSansAttested, Reason::NameNotAttested)]);
    // An operator who uses a custom DHCP domain on its VPC lists it.
    let mut world = World::two_workers();
    with_aws_metadata(&mut world);
    world.attestation_mut("worker-1").metadata[0]
        .dns_names
        .push("worker-1.corp.example.com".to_owned());
    world.policy.metadata_sources.dns_suffixes =
        vec![DnsSuffix::new("corp.example.com").expect("suffix")];
    let spec = CsrSpec::kubelet(
        "worker-1",
        &["worker-1", "worker-1.corp.example.com"],
        &["10.0.0.11"],
    );
    assert_eq!(
        world.decide(&csr_input("worker-1", &spec.pem())).decision(),
        Decision::Approve
    );
}

#[test]
fn each_clouds_instance_domains() {
    for (source, name, inside) in [
        ("cloud:aws", "ip-10-0-0-7.ec2.internal", true),
        ("cloud:aws", "ip-10-0-0-7.eu-west-1.compute.internal", true),
        ("cloud:aws", "ec2-203-0-113-7.compute-1.amazonaws.com", true),
        (
            "cloud:aws",
            "ec2-203-0-113-7.eu-west-1.compute.amazonaws.com",
            true,
        ),
        ("cloud:aws", "my-lb-1234.elb.amazonaws.com", false),
        ("cloud:aws", "abc.gr7.eu-west-1.eks.amazonaws.com", false),
        ("cloud:aws", "compute.internal", false),
        ("cloud:gcp", "vm-1.c.my-project.internal", true),
        (
            "cloud:gcp",
            "vm-1.europe-west1-b.c.my-project.internal",
            true,
        ),
        ("cloud:gcp", "vault.corp.internal", false),
        ("cloud:azure", "aks-nodepool1-12345678-vmss000000", false),
        ("cloud:openstack", "vm-1.novalocal", true),
        ("cloud:openstack", "vm-1.example.org", false),
        ("cloud:other", "vm-1.ec2.internal", false),
    ] {
        assert_eq!(
            in_cloud_instance_domain(source, name),
            inside,
            "{source} {name}"
        );
    }
}

#[test]
fn an_incomplete_metadata_reading_never_supports_a_denial() {
    let mut world = World::two_workers();
    let a = world.attestation_mut("worker-1");
    a.sources
        .push(SourceReport::incomplete("cloud:aws", "no answer within 2s"));
    a.metadata.push(MetadataFacts {
        source: "cloud:aws".to_owned(),
        addresses: Vec::new(),
        dns_names: Vec::new(),
    });
    let v = world.decide(&cloud_csr());
    assert_eq!(v.decision(), Decision::Pending);
    assert!(
        detail(&v, C::IpSansAttested).contains("no answer within 2s"),
        "{}",
        detail(&v, C::IpSansAttested)
    );
    // Still detecting the cloud: the same.
    let mut world = World::two_workers();
    world
        .attestation_mut("worker-1")
        .sources
        .push(SourceReport::incomplete("cloud", "detecting"));
    assert_eq!(world.decide(&cloud_csr()).decision(), Decision::Pending);
}

#[test]
fn another_nodes_metadata_claiming_the_address_or_name_holds_the_csr() {
    let mut world = World::two_workers();
    with_aws_metadata(&mut world);
    let rogue = world.attestation_mut("worker-2");
    rogue.sources.push(SourceReport::complete("cloud:aws"));
    rogue.metadata.push(MetadataFacts {
        source: "cloud:aws".to_owned(),
        addresses: vec![ip(PUBLIC)],
        dns_names: vec![EXTERNAL_DNS.to_owned()],
    });
    let v = world.decide(&cloud_csr());
    assert_eq!(v.decision(), Decision::Pending);
    assert_eq!(
        failed(&v),
        [(C::UniqueAmongAttestations, Reason::AddressConflict)]
    );
    let conflicts = detail(&v, C::UniqueAmongAttestations);
    assert!(
        conflicts.contains("203.0.113.7 is also attested by worker-2 (cloud:aws)"),
        "{conflicts}"
    );
    assert!(
        conflicts.contains(&format!(
            "{EXTERNAL_DNS} is a name worker-2's metadata states"
        )),
        "{conflicts}"
    );
}

#[test]
fn denied_names_and_networks_apply_whatever_the_metadata_states() {
    let mut world = World::two_workers();
    with_aws_metadata(&mut world);
    let a = world.attestation_mut("worker-1");
    a.metadata[0].addresses.push(ip("10.96.0.1"));
    a.metadata[0]
        .dns_names
        .push("kubernetes.default.svc".to_owned());
    let world = world.with_cluster_services();
    let spec = CsrSpec::kubelet(
        "worker-1",
        &["worker-1", "kubernetes.default.svc"],
        &["10.96.0.1"],
    );
    let v = world.decide(&csr_input("worker-1", &spec.pem()));
    assert_eq!(v.decision(), Decision::Deny);
    let failed = failed(&v);
    assert!(
        failed.contains(&(C::DnsSansAttested, Reason::NameNotAllowed))
            && failed.contains(&(C::IpSansAttested, Reason::AddressNotAllowed)),
        "{failed:?}"
    );
}

#[test]
fn source_patterns_are_cloud_names_or_any_cloud() {
    for ok in ["cloud:aws", "cloud:*", "cloud:my-cloud2"] {
        assert!(SourcePattern::new(ok).is_ok(), "{ok}");
    }
    for bad in ["aws", "cloud:", "cloud:AWS", "interfaces", "cloud:a:b"] {
        assert!(SourcePattern::new(bad).is_err(), "{bad}");
    }
    let any = SourcePattern::new("cloud:*").expect("pattern");
    assert!(any.matches("cloud:gcp") && !any.matches("interfaces") && !any.matches("cloud"));
}
