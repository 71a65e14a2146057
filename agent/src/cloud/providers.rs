//! The four metadata protocols: what to ask, with which headers, and how to read the
//! answers into [`Stated`] facts. Each function reads one provider completely or fails
//! with what went wrong; the caller bounds its time.

use std::net::IpAddr;

use http::Method;
use serde_json::Value;

use super::Stated;
use super::http::{MetadataClient, MetadataError};

/// AWS IMDSv2 (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html>):
/// a session token from `PUT /latest/api/token`, then every read with it.
pub mod aws {
    use super::*;

    /// Asks for a session token; its lifetime is only as long as one read needs.
    pub const TOKEN_PATH: &str = "/latest/api/token";
    /// The header asking for a token's lifetime.
    pub const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
    /// The header carrying the token.
    pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
    /// Longest token accepted, in bytes (AWS's are 56).
    const MAX_TOKEN_BYTES: usize = 512;

    /// A session token: the detection probe too (only IMDSv2 answers this PUT).
    pub async fn token(client: &MetadataClient) -> Result<String, MetadataError> {
        let token = client
            .text(Method::PUT, TOKEN_PATH, &[(TTL_HEADER, "60")])
            .await?
            .ok_or_else(|| malformed(TOKEN_PATH, "no token (404)"))?;
        let token = token.trim().to_owned();
        if token.is_empty()
            || token.len() > MAX_TOKEN_BYTES
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(malformed(
                TOKEN_PATH,
                "the token is empty, too long or not printable",
            ));
        }
        Ok(token)
    }

    /// Reads the instance's primary private and public IPv4 addresses, every interface's
    /// public IPv4 and IPv6 addresses, and its private and public DNS names.
    pub async fn read(client: &MetadataClient) -> Result<Stated, MetadataError> {
        let token = token(client).await?;
        let headers = [(TOKEN_HEADER, token.as_str())];
        let get = |path: String| async move {
            client
                .text(Method::GET, &path, &headers)
                .await
                .map(|t| (path, t))
        };
        let mut stated = Stated::default();
        for leaf in ["local-ipv4", "public-ipv4"] {
            if let (path, Some(text)) = get(format!("/latest/meta-data/{leaf}")).await? {
                stated.addresses_from_lines(&path, &text)?;
            }
        }
        for leaf in ["local-hostname", "public-hostname"] {
            if let (path, Some(text)) = get(format!("/latest/meta-data/{leaf}")).await? {
                stated.names_from_words(&path, &text)?;
            }
        }
        let macs_path = "/latest/meta-data/network/interfaces/macs/".to_owned();
        if let (path, Some(macs)) = get(macs_path).await? {
            for mac in macs.lines().map(|l| l.trim().trim_end_matches('/')) {
                if mac.is_empty() {
                    continue;
                }
                if !mac.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') || mac.len() > 17 {
                    return Err(malformed(&path, &format!("{mac:?} is not a MAC address")));
                }
                // Not `local-ipv4s`: the VPC CNI assigns its secondary addresses to pods;
                // the private addresses that are the node's are on its interfaces.
                for leaf in ["public-ipv4s", "ipv6s"] {
                    let path = format!("/latest/meta-data/network/interfaces/macs/{mac}/{leaf}");
                    if let (path, Some(text)) = get(path).await? {
                        stated.addresses_from_lines(&path, &text)?;
                    }
                }
            }
        }
        Ok(stated)
    }
}

/// GCE's metadata server (<https://cloud.google.com/compute/docs/metadata/querying-metadata>):
/// every request and answer carries `Metadata-Flavor: Google`.
pub mod gcp {
    use super::*;

    /// The header both ways.
    pub const FLAVOR_HEADER: &str = "Metadata-Flavor";
    /// Its value.
    pub const FLAVOR: &str = "Google";
    /// The detection probe.
    pub const PROBE_PATH: &str = "/computeMetadata/v1/instance/id";
    const HOSTNAME_PATH: &str = "/computeMetadata/v1/instance/hostname";
    const INTERFACES_PATH: &str = "/computeMetadata/v1/instance/network-interfaces/?recursive=true";

    async fn get(client: &MetadataClient, path: &str) -> Result<Option<String>, MetadataError> {
        let answer = client
            .request(Method::GET, path, &[(FLAVOR_HEADER, FLAVOR)])
            .await?;
        if answer
            .headers
            .get(FLAVOR_HEADER)
            .and_then(|v| v.to_str().ok())
            != Some(FLAVOR)
        {
            return Err(malformed(
                path,
                "the answer lacks `Metadata-Flavor: Google`",
            ));
        }
        match answer.status {
            http::StatusCode::OK => String::from_utf8(answer.body.to_vec())
                .map(Some)
                .map_err(|_| malformed(path, "the answer is not UTF-8 text")),
            http::StatusCode::NOT_FOUND => Ok(None),
            status => Err(MetadataError::Status {
                path: path.to_owned(),
                status,
            }),
        }
    }

    /// The detection probe: the server answers as GCE's does.
    pub async fn probe(client: &MetadataClient) -> Result<(), MetadataError> {
        get(client, PROBE_PATH)
            .await?
            .map(drop)
            .ok_or_else(|| malformed(PROBE_PATH, "no instance id (404)"))
    }

    /// Reads the instance's hostname and every interface's internal and external
    /// addresses (IPv4 and IPv6).
    pub async fn read(client: &MetadataClient) -> Result<Stated, MetadataError> {
        let mut stated = Stated::default();
        if let Some(hostname) = get(client, HOSTNAME_PATH).await? {
            stated.names_from_words(HOSTNAME_PATH, &hostname)?;
        }
        let interfaces = get(client, INTERFACES_PATH)
            .await?
            .ok_or_else(|| malformed(INTERFACES_PATH, "no network interfaces (404)"))?;
        let json: Value = serde_json::from_str(&interfaces)
            .map_err(|e| malformed(INTERFACES_PATH, &format!("not JSON: {e}")))?;
        let list = json
            .as_array()
            .ok_or_else(|| malformed(INTERFACES_PATH, "not a JSON array"))?;
        for iface in list {
            let strings = iface
                .get("ip")
                .into_iter()
                .chain(
                    iface
                        .get("ipv6s")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten(),
                )
                .chain(
                    iface
                        .get("accessConfigs")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c.get("externalIp")),
                )
                .chain(
                    iface
                        .get("ipv6AccessConfigs")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c.get("externalIpv6")),
                );
            for value in strings {
                match value.as_str() {
                    // An access config without an external address is an empty string.
                    Some("") => {}
                    Some(text) => stated.address(INTERFACES_PATH, text)?,
                    None => return Err(malformed(INTERFACES_PATH, "an address is not a string")),
                }
            }
        }
        Ok(stated)
    }
}

/// Azure's Instance Metadata Service
/// (<https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>):
/// `Metadata: true` on every request, one JSON document.
pub mod azure {
    use super::*;

    /// The instance document (an API version every IMDS serves).
    pub const INSTANCE_PATH: &str = "/metadata/instance?api-version=2021-02-01";
    /// The header every request carries.
    pub const HEADER: (&str, &str) = ("Metadata", "true");

    async fn document(client: &MetadataClient) -> Result<Value, MetadataError> {
        let text = client
            .text(Method::GET, INSTANCE_PATH, &[HEADER])
            .await?
            .ok_or_else(|| malformed(INSTANCE_PATH, "no instance document (404)"))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| malformed(INSTANCE_PATH, &format!("not JSON: {e}")))?;
        if !json.get("compute").is_some_and(Value::is_object) {
            return Err(malformed(INSTANCE_PATH, "no `compute` object"));
        }
        Ok(json)
    }

    /// The detection probe: only IMDS answers this path with a `compute` document.
    pub async fn probe(client: &MetadataClient) -> Result<(), MetadataError> {
        document(client).await.map(drop)
    }

    /// Reads the computer name and every interface's private and public addresses.
    pub async fn read(client: &MetadataClient) -> Result<Stated, MetadataError> {
        let json = document(client).await?;
        let mut stated = Stated::default();
        if let Some(name) = json
            .pointer("/compute/osProfile/computerName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            stated.names_from_words(INSTANCE_PATH, name)?;
        }
        let interfaces = json
            .pointer("/network/interface")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(INSTANCE_PATH, "no `network.interface` list"))?;
        for iface in interfaces {
            for family in ["ipv4", "ipv6"] {
                let addresses = iface
                    .pointer(&format!("/{family}/ipAddress"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten();
                for entry in addresses {
                    for key in ["privateIpAddress", "publicIpAddress"] {
                        match entry.get(key).and_then(Value::as_str) {
                            None | Some("") => {}
                            Some(text) => stated.address(INSTANCE_PATH, text)?,
                        }
                    }
                }
            }
        }
        Ok(stated)
    }
}

/// OpenStack's metadata service
/// (<https://docs.openstack.org/nova/latest/user/metadata.html>): the instance's
/// hostname, its fixed addresses (`network_data.json`) and, from the EC2-compatible
/// API, its floating address.
pub mod openstack {
    use super::*;

    /// The instance document; also the detection probe.
    pub const META_DATA_PATH: &str = "/openstack/latest/meta_data.json";
    const NETWORK_DATA_PATH: &str = "/openstack/latest/network_data.json";
    const FLOATING_PATH: &str = "/latest/meta-data/public-ipv4";

    async fn json(client: &MetadataClient, path: &str) -> Result<Value, MetadataError> {
        let text = client
            .text(Method::GET, path, &[])
            .await?
            .ok_or_else(|| malformed(path, "not found (404)"))?;
        serde_json::from_str(&text).map_err(|e| malformed(path, &format!("not JSON: {e}")))
    }

    async fn meta_data(client: &MetadataClient) -> Result<Value, MetadataError> {
        let meta = json(client, META_DATA_PATH).await?;
        if !meta.get("uuid").is_some_and(Value::is_string) {
            return Err(malformed(META_DATA_PATH, "no instance `uuid`"));
        }
        Ok(meta)
    }

    /// The detection probe: Nova's `meta_data.json` with an instance `uuid`.
    pub async fn probe(client: &MetadataClient) -> Result<(), MetadataError> {
        meta_data(client).await.map(drop)
    }

    /// Reads the hostname and every fixed and floating address.
    pub async fn read(client: &MetadataClient) -> Result<Stated, MetadataError> {
        let meta = meta_data(client).await?;
        let mut stated = Stated::default();
        if let Some(hostname) = meta.get("hostname").and_then(Value::as_str) {
            stated.names_from_words(META_DATA_PATH, hostname)?;
        }
        let network = json(client, NETWORK_DATA_PATH).await?;
        for net in network
            .get("networks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(text) = net.get("ip_address").and_then(Value::as_str) {
                stated.address(NETWORK_DATA_PATH, text)?;
            }
        }
        if let Some(text) = client.text(Method::GET, FLOATING_PATH, &[]).await? {
            stated.addresses_from_lines(FLOATING_PATH, &text)?;
        }
        Ok(stated)
    }
}

fn malformed(path: &str, problem: &str) -> MetadataError {
    MetadataError::Malformed {
        path: path.to_owned(),
        problem: problem.to_owned(),
    }
}

/// Parses one address as a metadata service writes it.
pub(super) fn parse_ip(path: &str, text: &str) -> Result<IpAddr, MetadataError> {
    text.trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| malformed(path, &format!("{:?} is not an IP address", text.trim())))
}
