//! The agent's cloud metadata reader against the testbed's metadata service, in each
//! provider's protocol: what it reads, how it detects the cloud, and that a slow,
//! redirecting, oversized or garbage service costs at most the timeout and leaves the
//! source marked incomplete (never a hang, never facts it did not read).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rubber_stamp_agent::cloud::{Cloud, CloudConfig, CloudFacts, CloudMode, Detection, Provider};
use rubber_stamp_metadata_sim::{Fault, Instance, MetadataService, Provider as SimProvider};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The bound on reads that must succeed: generous, so a busy machine does not fail them.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The bound where the service is made slower than it (30 s): the test waits this long.
const SHORT: Duration = Duration::from_millis(500);

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn instance() -> Instance {
    Instance {
        private: vec![ip("10.0.0.7"), ip("fd00::7")],
        public: vec![ip("203.0.113.7")],
        private_name: Some("ip-10-0-0-7.ec2.internal".to_owned()),
        public_name: Some("ec2-203-0-113-7.compute-1.amazonaws.com".to_owned()),
    }
}

async fn service(provider: SimProvider) -> Result<MetadataService, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(MetadataService::start(listener, provider, instance())?)
}

fn cloud(mode: CloudMode, endpoint: SocketAddr) -> Cloud {
    cloud_within(mode, endpoint, TIMEOUT)
}

fn cloud_within(mode: CloudMode, endpoint: SocketAddr, timeout: Duration) -> Cloud {
    Cloud::new(CloudConfig {
        mode,
        endpoint,
        timeout,
    })
}

async fn read(mode: CloudMode, endpoint: SocketAddr) -> CloudFacts {
    cloud(mode, endpoint)
        .read()
        .await
        .expect("a provider is set")
}

#[tokio::test]
async fn each_providers_protocol_is_read_completely() -> TestResult {
    let all = vec!["10.0.0.7", "203.0.113.7", "fd00::7"];
    let private = vec!["ip-10-0-0-7.ec2.internal"];
    let cases = [
        (
            SimProvider::Aws,
            CloudMode::Aws,
            "cloud:aws",
            vec![
                "ec2-203-0-113-7.compute-1.amazonaws.com",
                "ip-10-0-0-7.ec2.internal",
            ],
        ),
        (
            SimProvider::Gcp,
            CloudMode::Gcp,
            "cloud:gcp",
            private.clone(),
        ),
        (
            SimProvider::Azure,
            CloudMode::Azure,
            "cloud:azure",
            private.clone(),
        ),
        (
            SimProvider::Openstack,
            CloudMode::Openstack,
            "cloud:openstack",
            private.clone(),
        ),
    ];
    for (sim, mode, source, names) in cases {
        let service = service(sim).await?;
        let facts = read(mode, service.addr()).await;
        assert_eq!(facts.problem, None, "{source}");
        assert_eq!(facts.source, source);
        let got: Vec<String> = facts.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(got, all, "{source}");
        assert_eq!(facts.dns_names, names, "{source}");
    }
    Ok(())
}

#[tokio::test]
async fn auto_detects_each_provider_and_none_where_nothing_answers() -> TestResult {
    for (sim, provider) in [
        (SimProvider::Aws, Provider::Aws),
        (SimProvider::Gcp, Provider::Gcp),
        (SimProvider::Azure, Provider::Azure),
        (SimProvider::Openstack, Provider::OpenStack),
    ] {
        let service = service(sim).await?;
        let cloud = cloud(CloudMode::Auto, service.addr());
        // Until detection ends, reports say the cloud source is incomplete.
        let detecting = cloud.read().await.ok_or("detecting")?;
        assert_eq!(detecting.source, "cloud");
        assert!(detecting.problem.is_some());
        cloud.detect().await;
        assert_eq!(*cloud.detection().borrow(), Detection::Found(provider));
        assert_eq!(cloud.read().await.ok_or("read")?.source, provider.source());
    }
    // Nothing listens: no cloud, and the reports carry no cloud source at all.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let cloud = cloud(CloudMode::Auto, closed);
    cloud.detect().await;
    assert_eq!(*cloud.detection().borrow(), Detection::None);
    assert!(cloud.read().await.is_none());
    Ok(())
}

#[tokio::test]
async fn a_slow_service_costs_at_most_the_timeout_and_keeps_detection_open() -> TestResult {
    let service = service(SimProvider::Aws).await?;
    service.set_fault(Fault::Slow(Duration::from_secs(30)));
    let started = Instant::now();
    let facts = cloud_within(CloudMode::Aws, service.addr(), SHORT)
        .read()
        .await
        .ok_or("aws is named")?;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
    let problem = facts.problem.ok_or("a timeout is a problem")?;
    assert!(problem.contains("no answer within"), "{problem}");
    assert!(facts.addresses.is_empty());

    // Something connects but does not answer: ambiguous, not bare metal. The source stays
    // incomplete (no denial rests on the reports) and detection goes on.
    let cloud = cloud_within(CloudMode::Auto, service.addr(), SHORT);
    assert!(!cloud.detect().await);
    assert_eq!(*cloud.detection().borrow(), Detection::Detecting);
    assert_eq!(cloud.read().await.ok_or("detecting")?.source, "cloud");
    Ok(())
}

#[tokio::test]
async fn a_reading_cut_at_a_limit_keeps_what_it_read_and_says_so() -> TestResult {
    let service = service(SimProvider::Aws).await?;
    let public: Vec<IpAddr> = (0..70u8).map(|i| IpAddr::from([198, 51, 100, i])).collect();
    service.set_instance(Instance {
        public,
        ..instance()
    });
    let facts = read(CloudMode::Aws, service.addr()).await;
    assert_eq!(facts.addresses.len(), 64);
    let problem = facts.problem.ok_or("a cut reading is incomplete")?;
    assert!(problem.contains("more than 64 addresses"), "{problem}");
    Ok(())
}

#[tokio::test]
async fn redirects_oversized_and_garbage_answers_mark_the_source_incomplete() -> TestResult {
    for (fault, expected) in [
        (Fault::Redirect, "redirect"),
        (Fault::Oversized(400 * 1024), "larger than 262144 bytes"),
        (Fault::Garbage, "not UTF-8"),
    ] {
        for (sim, mode) in [
            (SimProvider::Aws, CloudMode::Aws),
            (SimProvider::Gcp, CloudMode::Gcp),
            (SimProvider::Azure, CloudMode::Azure),
            (SimProvider::Openstack, CloudMode::Openstack),
        ] {
            let service = service(sim).await?;
            service.set_fault(fault);
            let facts = read(mode, service.addr()).await;
            let problem = facts.problem.clone().unwrap_or_default();
            assert!(problem.contains(expected), "{mode:?} {fault:?}: {problem}");
            assert!(
                facts.addresses.is_empty() && facts.dns_names.is_empty(),
                "{mode:?} {fault:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_answer_that_is_not_a_name_is_refused_with_the_reason() -> TestResult {
    let service = service(SimProvider::Aws).await?;
    service.set_instance(Instance {
        private_name: Some("not a name!".to_owned()),
        ..instance()
    });
    let facts = read(CloudMode::Aws, service.addr()).await;
    let problem = facts.problem.ok_or("a bad name is a problem")?;
    assert!(problem.contains("is not a DNS name"), "{problem}");
    Ok(())
}

#[tokio::test]
async fn auto_finds_a_service_that_was_unreachable_when_the_agent_started() -> TestResult {
    let service = service(SimProvider::Gcp).await?;
    service.set_fault(Fault::Slow(Duration::from_secs(30)));
    let cloud = cloud_within(CloudMode::Auto, service.addr(), SHORT);
    assert!(!cloud.detect().await);
    assert_eq!(*cloud.detection().borrow(), Detection::Detecting);
    // The runtime probes again later (sooner while ambiguous); then it answers.
    service.set_fault(Fault::None);
    // Each probe is bounded by the short timeout; probe until one answers, as the runtime
    // does, so a busy machine only takes more rounds.
    let mut rounds = 0;
    while !cloud.detect().await {
        rounds += 1;
        assert!(rounds < 50, "the service never answered a probe");
    }
    assert_eq!(*cloud.detection().borrow(), Detection::Found(Provider::Gcp));
    // A named provider is never detected: its failures are reported as incomplete.
    let named = self::cloud(CloudMode::Aws, service.addr());
    assert!(!named.detects());
    Ok(())
}
