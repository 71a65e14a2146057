//! The metadata service refuses what each provider's real service refuses, so a client
//! that reads it has followed the protocol: AWS without a token (401) or a token request
//! without a TTL (400) or by GET (405); GCE without `Metadata-Flavor: Google` (403, and
//! every answer carries the header); Azure without `Metadata: true` or an `api-version`
//! (400).

use std::net::SocketAddr;

use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rubber_stamp_metadata_sim::{AWS_TOKEN_HEADER, Instance, MetadataService, Provider};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn ask(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, http::HeaderMap, String), Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream))
            .await?;
    tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "169.254.169.254");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = sender.send_request(request.body(Empty::new())?).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

async fn start(provider: Provider) -> Result<MetadataService, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(MetadataService::start(
        listener,
        provider,
        Instance {
            private: vec!["10.0.0.7".parse()?],
            public: vec!["203.0.113.7".parse()?],
            private_name: Some("ip-10-0-0-7.ec2.internal".to_owned()),
            public_name: None,
        },
    )?)
}

#[tokio::test]
async fn aws_requires_a_session_token_from_a_put_with_a_ttl() -> TestResult {
    let s = start(Provider::Aws).await?;
    let a = s.addr();
    assert_eq!(
        ask(a, "GET", "/latest/meta-data/local-ipv4", &[]).await?.0,
        401
    );
    assert_eq!(ask(a, "PUT", "/latest/api/token", &[]).await?.0, 400);
    assert_eq!(
        ask(
            a,
            "GET",
            "/latest/api/token",
            &[("x-aws-ec2-metadata-token-ttl-seconds", "60")]
        )
        .await?
        .0,
        405
    );
    let (status, _, token) = ask(
        a,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await?;
    assert_eq!(status, 200);
    let (status, _, ip) = ask(
        a,
        "GET",
        "/latest/meta-data/local-ipv4",
        &[(AWS_TOKEN_HEADER, &token)],
    )
    .await?;
    assert_eq!((status, ip.as_str()), (200, "10.0.0.7"));
    assert_eq!(
        ask(
            a,
            "GET",
            "/latest/meta-data/local-ipv4",
            &[(AWS_TOKEN_HEADER, "forged")]
        )
        .await?
        .0,
        401
    );
    // No public name: 404, as for an instance without one.
    assert_eq!(
        ask(
            a,
            "GET",
            "/latest/meta-data/public-hostname",
            &[(AWS_TOKEN_HEADER, &token)]
        )
        .await?
        .0,
        404
    );
    Ok(())
}

#[tokio::test]
async fn gce_requires_the_flavor_header_and_marks_every_answer() -> TestResult {
    let s = start(Provider::Gcp).await?;
    let (status, headers, _) = ask(s.addr(), "GET", "/computeMetadata/v1/instance/id", &[]).await?;
    assert_eq!(status, 403);
    assert_eq!(
        headers.get("metadata-flavor").and_then(|v| v.to_str().ok()),
        Some("Google")
    );
    let (status, _, body) = ask(
        s.addr(),
        "GET",
        "/computeMetadata/v1/instance/network-interfaces/?recursive=true",
        &[("Metadata-Flavor", "Google")],
    )
    .await?;
    assert_eq!(status, 200);
    assert!(body.contains("\"externalIp\":\"203.0.113.7\""), "{body}");
    Ok(())
}

#[tokio::test]
async fn azure_requires_the_metadata_header_and_an_api_version() -> TestResult {
    let s = start(Provider::Azure).await?;
    assert_eq!(
        ask(
            s.addr(),
            "GET",
            "/metadata/instance?api-version=2021-02-01",
            &[]
        )
        .await?
        .0,
        400
    );
    assert_eq!(
        ask(
            s.addr(),
            "GET",
            "/metadata/instance",
            &[("Metadata", "true")]
        )
        .await?
        .0,
        400
    );
    let (status, _, body) = ask(
        s.addr(),
        "GET",
        "/metadata/instance?api-version=2021-02-01",
        &[("Metadata", "true")],
    )
    .await?;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"publicIpAddress\":\"203.0.113.7\""),
        "{body}"
    );
    Ok(())
}
