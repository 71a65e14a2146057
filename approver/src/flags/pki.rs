//! Flags of the attestation port's PKI (each with an environment fallback), turned into a
//! checked [`PkiConfig`].

use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::pki::plan::{Lifetime, Schedule};
use crate::pki::{PkiConfig, PkiConfigError};

/// Where the approver keeps its CA and serving certificate when no `--tls-cert`/`--tls-key`
/// are given, and how long they live.
#[derive(Clone, Debug, Args)]
pub struct PkiArgs {
    /// Namespace of the TLS Secret and the CA bundle ConfigMap. Default: --namespace.
    #[arg(long, env = "RUBBER_STAMP_TLS_NAMESPACE", value_name = "NAMESPACE")]
    pub tls_namespace: Option<String>,

    /// Secret holding the approver's CA and serving certificate. Without --tls-cert and
    /// --tls-key the first replica creates it and every replica renews from it.
    #[arg(
        long,
        env = "RUBBER_STAMP_TLS_SECRET",
        default_value = "rubber-stamp-approver-tls"
    )]
    pub tls_secret: String,

    /// ConfigMap the CA bundle is published in (key `ca.crt`); agents mount it.
    #[arg(
        long,
        env = "RUBBER_STAMP_CA_CONFIGMAP",
        default_value = "rubber-stamp-ca"
    )]
    pub ca_configmap: String,

    /// The headless Service agents resolve; the serving certificate names `<service>`,
    /// `<service>.<namespace>`, `<service>.<namespace>.svc` and
    /// `<service>.<namespace>.svc.<cluster-domain>`.
    #[arg(
        long,
        env = "RUBBER_STAMP_SERVICE_NAME",
        default_value = "rubber-stamp-approver"
    )]
    pub service_name: String,

    /// The cluster's DNS domain (kubelet `clusterDomain`).
    #[arg(
        long,
        env = "RUBBER_STAMP_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// Validity of a new serving certificate (e.g. `2160h` = 90 days).
    #[arg(long, env = "RUBBER_STAMP_SERVING_CERT_VALIDITY", default_value = "2160h", value_parser = parse_duration)]
    pub serving_cert_validity: Duration,

    /// Renew the serving certificate when less than this is left (e.g. `720h` = 30 days).
    #[arg(long, env = "RUBBER_STAMP_SERVING_CERT_RENEW_BEFORE", default_value = "720h", value_parser = parse_duration)]
    pub serving_cert_renew_before: Duration,

    /// Validity of a new CA (e.g. `43800h` = 5 years).
    #[arg(long, env = "RUBBER_STAMP_CA_VALIDITY", default_value = "43800h", value_parser = parse_duration)]
    pub ca_validity: Duration,

    /// Start a CA rotation when less than this is left (e.g. `8760h` = 1 year): a successor
    /// CA is published next to the current one first.
    #[arg(long, env = "RUBBER_STAMP_CA_RENEW_BEFORE", default_value = "8760h", value_parser = parse_duration)]
    pub ca_renew_before: Duration,

    /// How long the bundle with a successor CA is published before that CA signs the serving
    /// certificate. Must cover the kubelet's ConfigMap volume refresh (about a minute plus
    /// its sync period) and two --tls-refresh-interval.
    #[arg(long, env = "RUBBER_STAMP_CA_PROPAGATION_DELAY", default_value = "1h", value_parser = parse_duration)]
    pub ca_propagation_delay: Duration,

    /// How often the TLS Secret (or the --tls-cert/--tls-key files) is read again to renew
    /// or pick up a new certificate.
    #[arg(long, env = "RUBBER_STAMP_TLS_REFRESH_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub tls_refresh_interval: Duration,
}

// === impl PkiArgs ===

impl PkiArgs {
    /// The checked configuration. The namespace is `--tls-namespace`, else `namespace` (the
    /// approver's own), else empty: the client's default, filled in by
    /// [`RunConfig::resolve_namespaces`](crate::runtime::RunConfig::resolve_namespaces).
    pub fn into_config(self, namespace: Option<&str>) -> Result<PkiConfig, PkiConfigError> {
        let own = namespace;
        let namespace = match self.tls_namespace {
            Some(given) => given,
            None => namespace.unwrap_or_default().to_owned(),
        };
        if !namespace.is_empty() && !dns_name(&namespace, true) {
            return Err(PkiConfigError::Name {
                flag: "tls-namespace",
                value: namespace,
            });
        }
        for (flag, value, label) in [
            ("tls-secret", &self.tls_secret, false),
            ("ca-configmap", &self.ca_configmap, false),
            ("service-name", &self.service_name, true),
            ("cluster-domain", &self.cluster_domain, false),
        ] {
            if !dns_name(value, label) {
                return Err(PkiConfigError::Name {
                    flag,
                    value: value.clone(),
                });
            }
        }
        let shorter = |a: Duration, b: Duration, shorter, longer| {
            if a < b {
                Ok(())
            } else {
                Err(PkiConfigError::Order { shorter, longer })
            }
        };
        shorter(
            self.serving_cert_renew_before,
            self.serving_cert_validity,
            "serving-cert-renew-before",
            "serving-cert-validity",
        )?;
        shorter(
            self.ca_renew_before,
            self.ca_validity,
            "ca-renew-before",
            "ca-validity",
        )?;
        shorter(
            self.ca_propagation_delay,
            self.ca_renew_before,
            "ca-propagation-delay",
            "ca-renew-before",
        )?;
        shorter(
            self.tls_refresh_interval,
            self.serving_cert_renew_before,
            "tls-refresh-interval",
            "serving-cert-renew-before",
        )?;
        shorter(
            Duration::ZERO,
            self.tls_refresh_interval,
            "0s",
            "tls-refresh-interval",
        )?;
        if self.ca_propagation_delay < self.tls_refresh_interval * 2 {
            return Err(PkiConfigError::Propagation);
        }
        Ok(PkiConfig {
            namespace,
            secret: self.tls_secret,
            config_map: self.ca_configmap,
            service: self.service_name,
            service_namespace: own.unwrap_or_default().to_owned(),
            cluster_domain: self.cluster_domain.trim_end_matches('.').to_owned(),
            schedule: Schedule {
                ca: Lifetime {
                    validity: self.ca_validity,
                    renew_before: self.ca_renew_before,
                },
                serving: Lifetime {
                    validity: self.serving_cert_validity,
                    renew_before: self.serving_cert_renew_before,
                },
                propagation: self.ca_propagation_delay,
            },
            refresh_interval: self.tls_refresh_interval,
        })
    }
}

/// A DNS-1123 label (`label`) or subdomain: lower-case alphanumerics and `-`, labels of 1–63
/// characters that start and end alphanumeric, 253 characters in all.
fn dns_name(value: &str, label: bool) -> bool {
    let value = value.strip_suffix('.').unwrap_or(value);
    let valid_label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if label {
        valid_label(value)
    } else {
        (1..=253).contains(&value.len()) && value.split('.').all(valid_label)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        pki: PkiArgs,
    }

    fn parse(args: &[&str]) -> Result<PkiConfig, String> {
        let cli =
            Cli::try_parse_from(std::iter::once(&"x").chain(args)).map_err(|e| e.to_string())?;
        cli.pki
            .into_config(Some("rubber-stamp"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_name_the_manifests_objects() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.secret, "rubber-stamp-approver-tls");
        assert_eq!(config.config_map, "rubber-stamp-ca");
        assert_eq!(
            config.dns_names(),
            [
                "rubber-stamp-approver",
                "rubber-stamp-approver.rubber-stamp",
                "rubber-stamp-approver.rubber-stamp.svc",
                "rubber-stamp-approver.rubber-stamp.svc.cluster.local",
            ]
        );
        assert_eq!(
            config.schedule.serving.validity,
            Duration::from_secs(90 * 86400)
        );
        assert_eq!(
            config.schedule.ca.renew_before,
            Duration::from_secs(365 * 86400)
        );
    }

    #[test]
    fn names_and_durations_are_checked() {
        assert!(
            parse(&["--tls-namespace", "Bad_NS"]).is_err_and(|e| e.contains("--tls-namespace"))
        );
        assert!(
            parse(&["--cluster-domain", "corp.example."]).is_ok_and(|c| c
                .dns_names()
                .last()
                .is_some_and(|n| n.ends_with(".svc.corp.example")))
        );
        assert!(
            parse(&["--serving-cert-renew-before", "3000h"])
                .is_err_and(|e| e.contains("--serving-cert-renew-before must be shorter"))
        );
        assert!(
            parse(&["--ca-propagation-delay", "1m"])
                .is_err_and(|e| e.contains("at least twice --tls-refresh-interval"))
        );
        assert!(parse(&["--tls-refresh-interval", "0s"]).is_err());
    }
}
