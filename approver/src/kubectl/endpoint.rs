//! Where the approver is, in pure functions: the admin URL (given, or found from the leader
//! Lease's holder and its Pod), the name its certificate must carry, and the policy and
//! deny mode the leader runs with, read from its Pod's spec.

use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Pod};
use rubber_stamp_core::DenyMode;

use super::flags::Scheme;

/// The approver's namespace in `deploy/`.
pub const DEFAULT_NAMESPACE: &str = "rubber-stamp";
/// The name of the admin port (`--admin-listen`, `GET /attestations`) among the approver
/// container's ports in `deploy/base/approver.yaml`.
pub const ADMIN_PORT_NAME: &str = "metrics";
/// The approver's container in `deploy/base/approver.yaml`.
pub const APPROVER_CONTAINER: &str = "approver";
/// The headless Service whose names the approver's serving certificate carries
/// (`--service-name`'s default).
pub const APPROVER_SERVICE: &str = "rubber-stamp-approver";
/// Path of the attestation snapshot on the admin port.
pub const ATTESTATIONS_PATH: &str = crate::admin::ATTESTATIONS_PATH;

/// An admin URL, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `https` or `http`.
    pub scheme: Scheme,
    /// Host name or IP address, without brackets.
    pub host: String,
    /// Port (the scheme's default when the URL names none).
    pub port: u16,
    /// Path before `/attestations`, without a trailing `/` (usually empty).
    pub base_path: String,
}

impl Endpoint {
    /// Parses `https://HOST[:PORT][/PREFIX]` or `http://…`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            Some(other) => {
                return Err(format!(
                    "{url:?}: scheme {other:?} is neither https nor http"
                ));
            }
            None => return Err(format!("{url:?} has no scheme: write https://{url}")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} names no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{url:?}: credentials in the URL are not accepted; use --token"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        if uri.query().is_some() {
            return Err(format!("{url:?}: a query is not accepted"));
        }
        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        });
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            host,
            port,
            base_path,
        })
    }

    /// An endpoint at an IP address.
    pub fn at(scheme: Scheme, ip: IpAddr, port: u16) -> Self {
        Self {
            scheme,
            host: ip.to_string(),
            port,
            base_path: String::new(),
        }
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// `host:port`, an IPv6 address in brackets (the `Host` header).
    pub fn authority(&self) -> String {
        match self.ip() {
            Some(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The path of the snapshot.
    pub fn attestations_path(&self) -> String {
        format!("{}{ATTESTATIONS_PATH}", self.base_path)
    }

    /// The snapshot's URL, for messages.
    pub fn attestations_url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.attestations_path()
        )
    }

    /// The URL without the path, for messages.
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.base_path
        )
    }

    /// The name the approver's certificate must carry: `explicit`, else the host when it is
    /// a name, else the approver's Service in `namespace` (`rubber-stamp-approver.<ns>.svc`),
    /// one of the names the approver's serving certificate carries.
    pub fn server_name(&self, explicit: Option<&str>, namespace: &str) -> String {
        match explicit {
            Some(name) => name.to_owned(),
            None if self.ip().is_none() => self.host.clone(),
            None => format!("{APPROVER_SERVICE}.{namespace}.svc"),
        }
    }
}

/// Who holds the leader Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// `spec.holderIdentity`: the replica's (and its Pod's) name.
    pub holder: String,
    /// When the holder last renewed it.
    pub renewed_at: Option<Timestamp>,
    /// `renewTime + leaseDurationSeconds` is past: the holder stopped renewing, and no
    /// replica acts until another takes the Lease.
    pub expired: bool,
}

/// The holder of `lease` as of `now`; an error when nobody holds it.
pub fn leader(lease: &Lease, now: Timestamp) -> Result<Leader, String> {
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
        .ok_or("nobody holds it (no approver replica is the leader)")?;
    let renewed_at = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
    let duration = spec.and_then(|s| s.lease_duration_seconds);
    let expired = match (renewed_at, duration) {
        (Some(renewed), Some(seconds)) => {
            now > renewed + SignedDuration::from_secs(i64::from(seconds.max(0)))
        }
        _ => false,
    };
    Ok(Leader {
        holder: holder.to_owned(),
        renewed_at,
        expired,
    })
}

/// The admin endpoint of the approver `pod`: its IP and the container port named
/// `port_name` (in the `approver` container first, then in any).
pub fn pod_endpoint(pod: &Pod, port_name: &str, scheme: Scheme) -> Result<Endpoint, String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    let ip = status
        .and_then(|s| s.pod_ips.as_ref())
        .and_then(|ips| ips.first())
        .map(|ip| ip.ip.as_str())
        .or_else(|| status.and_then(|s| s.pod_ip.as_deref()))
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| {
            let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("unknown");
            format!("Pod {name} has no IP address (phase {phase})")
        })?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("Pod {name}'s IP {ip:?} is not an IP address"))?;
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let port = ordered(containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(port_name))
        .map(|p| p.container_port)
        .ok_or_else(|| format!("Pod {name} has no container port named {port_name:?}"))?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("Pod {name}'s port {port_name} is {port}, not a port number"))?;
    Ok(Endpoint::at(scheme, ip, port))
}

/// The `approver` container first, then the others.
fn ordered(containers: &[Container]) -> impl Iterator<Item = &Container> {
    containers
        .iter()
        .filter(|c| c.name == APPROVER_CONTAINER)
        .chain(containers.iter().filter(|c| c.name != APPROVER_CONTAINER))
}

/// Where the leader's policy file comes from: a key of a ConfigMap its Pod mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySource {
    /// The ConfigMap (in the Pod's namespace).
    pub config_map: String,
    /// Its key holding the file.
    pub key: String,
    /// `--policy` as the approver reads it.
    pub path: String,
}

/// What the leader's Pod says about how it decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSettings {
    /// Its policy: `Ok(None)` for the built-in default (no `--policy`), an error when the
    /// file does not come from a ConfigMap this can read.
    pub policy: Result<Option<PolicySource>, String>,
    /// Its `--deny`, when set.
    pub deny: Option<DenyMode>,
}

impl Default for PodSettings {
    /// The built-in policy, the policy's deny mode.
    fn default() -> Self {
        Self {
            policy: Ok(None),
            deny: None,
        }
    }
}

/// The policy and deny mode of the approver container of `pod`: `--policy` and `--deny`
/// from its arguments (`--flag=value` or `--flag value`) or, when absent there, from the
/// literal value of `RUBBER_STAMP_POLICY` and `RUBBER_STAMP_DENY` in its environment.
pub fn pod_settings(pod: &Pod) -> PodSettings {
    let Some(spec) = pod.spec.as_ref() else {
        return PodSettings {
            policy: Err("the Pod has no spec".to_owned()),
            deny: None,
        };
    };
    let Some(container) = ordered(&spec.containers).next() else {
        return PodSettings {
            policy: Err("the Pod has no containers".to_owned()),
            deny: None,
        };
    };
    let policy = match setting(container, "policy", "RUBBER_STAMP_POLICY") {
        None => Ok(None),
        Some(path) => policy_source(spec, container, &path).map(Some),
    };
    let deny = setting(container, "deny", "RUBBER_STAMP_DENY").and_then(|d| d.parse().ok());
    PodSettings { policy, deny }
}

/// The value of `--flag` in the container's arguments (command and args), else of `env`.
fn setting(container: &Container, flag: &str, env: &str) -> Option<String> {
    let long = format!("--{flag}");
    let with_value = format!("--{flag}=");
    let args: Vec<&str> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(String::as_str)
        .collect();
    let mut found = None;
    for (i, arg) in args.iter().enumerate() {
        if let Some(v) = arg.strip_prefix(&with_value) {
            found = Some(v.to_owned());
        } else if *arg == long {
            found = args.get(i + 1).map(|v| (*v).to_owned());
        }
    }
    found.or_else(|| {
        container
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == env)
            .find_map(|e| e.value.clone())
    })
}

/// The ConfigMap key behind the file `path` of `container`: the volume mounted at the
/// longest prefix of `path`, a ConfigMap volume, and the key projected to the rest.
fn policy_source(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    container: &Container,
    path: &str,
) -> Result<PolicySource, String> {
    if path.contains("$(") {
        return Err(format!("--policy={path} refers to a variable"));
    }
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let dir = m.mount_path.trim_end_matches('/');
            let rest = path.strip_prefix(dir)?.strip_prefix('/')?;
            Some((m, rest))
        })
        .max_by_key(|(m, _)| m.mount_path.len());
    let Some((mount, rest)) = mount else {
        return Err(format!("--policy={path} is not on a mounted volume"));
    };
    let rest = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
        Some(sub) => format!("{}/{rest}", sub.trim_end_matches('/')),
        None => rest.to_owned(),
    };
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .ok_or_else(|| format!("the Pod has no volume {:?}", mount.name))?;
    let config_map = volume.config_map.as_ref().ok_or_else(|| {
        format!(
            "--policy={path} is on volume {:?}, which is not a ConfigMap",
            volume.name
        )
    })?;
    let key = match &config_map.items {
        Some(items) if !items.is_empty() => items
            .iter()
            .find(|i| i.path == rest)
            .map(|i| i.key.clone())
            .ok_or_else(|| {
                format!(
                    "no item of ConfigMap {} is mounted at {path}",
                    config_map.name
                )
            })?,
        _ => rest.clone(),
    };
    if key.is_empty() || key.contains('/') {
        return Err(format!(
            "--policy={path} is not a key of ConfigMap {}",
            config_map.name
        ));
    }
    Ok(PolicySource {
        config_map: config_map.name.clone(),
        key,
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use serde_json::json;

    use super::*;

    fn pod_from(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("a Pod")
    }

    /// The approver Pod as `deploy/base/approver.yaml` makes it, on 10.0.3.7.
    fn shipped_pod() -> Pod {
        pod_from(json!({
            "metadata": {"name": "rubber-stamp-approver-7d9f-abcde", "namespace": "rubber-stamp"},
            "spec": {
                "containers": [{
                    "name": "approver",
                    "args": ["run", "--client-ca=/etc/rubber-stamp/client-ca/ca.crt",
                             "--policy=/etc/rubber-stamp/policy/policy.yaml", "--log-format=json"],
                    "ports": [
                        {"name": "attestation", "containerPort": 8443},
                        {"name": "health", "containerPort": 8081},
                        {"name": "metrics", "containerPort": 9090}
                    ],
                    "volumeMounts": [
                        {"name": "client-ca", "mountPath": "/etc/rubber-stamp/client-ca", "readOnly": true},
                        {"name": "policy", "mountPath": "/etc/rubber-stamp/policy", "readOnly": true}
                    ]
                }],
                "volumes": [
                    {"name": "client-ca", "configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"name": "policy", "configMap": {"name": "rubber-stamp-policy-5g7hk2"}}
                ]
            },
            "status": {"phase": "Running", "podIP": "10.0.3.7", "podIPs": [{"ip": "10.0.3.7"}]}
        }))
    }

    #[test]
    fn urls_are_parsed_with_default_ports_and_prefixes() {
        let e = Endpoint::parse("https://10.0.3.7:9090").expect("parses");
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Https, "10.0.3.7", 9090)
        );
        assert_eq!(e.attestations_url(), "https://10.0.3.7:9090/attestations");
        let e = Endpoint::parse("http://[fd00::7]/admin/").expect("parses");
        assert_eq!((e.scheme, e.port), (Scheme::Http, 80));
        assert_eq!(e.ip(), "fd00::7".parse().ok());
        assert_eq!(e.authority(), "[fd00::7]:80");
        assert_eq!(e.attestations_path(), "/admin/attestations");
        let e = Endpoint::parse("https://approver.example.com").expect("parses");
        assert_eq!(e.port, 443);
        assert_eq!(e.server_name(None, "ops"), "approver.example.com");
        for bad in [
            "10.0.3.7:9090",
            "ftp://x",
            "https://user:pw@x",
            "https://x/?a=b",
            "not a url",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_ip_endpoint_is_verified_against_the_approver_services_name() {
        let e = Endpoint::parse("https://10.0.3.7:9090").expect("parses");
        assert_eq!(e.server_name(None, "ops"), "rubber-stamp-approver.ops.svc");
        assert_eq!(e.server_name(Some("x.example"), "ops"), "x.example");
    }

    #[test]
    fn the_leader_is_the_lease_holder_and_an_unrenewed_lease_is_expired() {
        let renewed: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("approver-0".to_owned()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let at = |s: i64| renewed + SignedDuration::from_secs(s);
        let l = leader(&lease, at(10)).expect("held");
        assert_eq!(l.holder, "approver-0");
        assert!(!l.expired);
        assert!(leader(&lease, at(16)).expect("held").expired);
        assert!(leader(&Lease::default(), at(0)).is_err());
    }

    #[test]
    fn the_shipped_pods_admin_endpoint_and_policy_are_found() {
        let pod = shipped_pod();
        let e = pod_endpoint(&pod, ADMIN_PORT_NAME, Scheme::Https).expect("endpoint");
        assert_eq!(e.attestations_url(), "https://10.0.3.7:9090/attestations");
        let settings = pod_settings(&pod);
        assert_eq!(
            settings.policy,
            Ok(Some(PolicySource {
                config_map: "rubber-stamp-policy-5g7hk2".to_owned(),
                key: "policy.yaml".to_owned(),
                path: "/etc/rubber-stamp/policy/policy.yaml".to_owned(),
            }))
        );
        assert_eq!(settings.deny, None);
        assert!(pod_endpoint(&pod, "admin", Scheme::Https).is_err_and(|e| e.contains("\"admin\"")));
    }

    #[test]
    fn policy_and_deny_from_separate_arguments_items_and_the_environment() {
        let pod = pod_from(json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "sidecar", "image": "x"},
                    {"name": "approver",
                     "args": ["run", "--deny", "never", "--policy", "/cfg/p/rules.yaml"],
                     "volumeMounts": [{"name": "p", "mountPath": "/cfg/p/"}]}
                ],
                "volumes": [{"name": "p", "configMap": {"name": "pol", "items": [{"key": "policy.yaml", "path": "rules.yaml"}]}}]
            },
            "status": {}
        }));
        let s = pod_settings(&pod);
        assert_eq!(s.deny, Some(DenyMode::Never));
        let source = s.policy.expect("found").expect("a file");
        assert_eq!(
            (source.config_map.as_str(), source.key.as_str()),
            ("pol", "policy.yaml")
        );
        assert!(
            pod_endpoint(&pod, ADMIN_PORT_NAME, Scheme::Https).is_err_and(|e| e.contains("no IP"))
        );

        let env = pod_from(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "approver",
                "env": [{"name": "RUBBER_STAMP_POLICY", "value": "/secret/policy.yaml"},
                        {"name": "RUBBER_STAMP_DENY", "value": "never"}],
                "volumeMounts": [{"name": "s", "mountPath": "/secret"}]}],
                "volumes": [{"name": "s", "secret": {"secretName": "x"}}]}
        }));
        let s = pod_settings(&env);
        assert_eq!(s.deny, Some(DenyMode::Never));
        assert!(s.policy.is_err_and(|e| e.contains("not a ConfigMap")));

        let none = pod_from(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "approver", "args": ["run"]}]}}),
        );
        assert_eq!(pod_settings(&none), PodSettings::default());
    }

    /// The names this module looks for are the shipped manifest's.
    #[test]
    fn the_shipped_manifest_names_the_admin_port_and_the_policy_volume() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/approver.yaml");
        let text = std::fs::read_to_string(&path).expect("deploy/base/approver.yaml");
        let deployment = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
            .find(|d: &serde_json::Value| d["kind"] == "Deployment")
            .expect("a Deployment");
        let mut template: serde_json::Value = deployment["spec"]["template"].clone();
        template["metadata"]["name"] = json!("approver-0");
        template["status"] = json!({"podIP": "10.0.3.7"});
        let pod: Pod = serde_json::from_value(template).expect("a Pod template");
        let admin = pod_endpoint(&pod, ADMIN_PORT_NAME, Scheme::Https).expect("admin port");
        let default_admin: std::net::SocketAddr = "[::]:9090".parse().expect("addr");
        assert_eq!(
            admin.port,
            default_admin.port(),
            "the admin port is --admin-listen's default"
        );
        let policy = pod_settings(&pod)
            .policy
            .expect("readable")
            .expect("a policy file");
        assert!(
            policy.config_map.starts_with("rubber-stamp-policy"),
            "{policy:?}"
        );
    }
}
