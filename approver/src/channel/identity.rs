//! A node's identity, taken only from its verified client certificate:
//! exactly one `CN=system:node:<name>` and exactly one organisation, `O=system:nodes` —
//! the same subject rule the decision applies to the CSR itself (check 3).

use x509_parser::prelude::{FromDer, X509Certificate};

use rubber_stamp_core::{NODE_CN_PREFIX, NODES_GROUP, NodeName, NodeNameError};

/// Who a verified client certificate says the peer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node, from `CN=system:node:<name>`.
    pub node: NodeName,
    /// The certificate's serial number, lower-case hex without separators.
    pub serial: String,
}

/// Why a verified client certificate does not identify a node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The connection carries no client certificate (cannot happen when the TLS
    /// configuration requires one; kept so the check never assumes it).
    #[error("no client certificate")]
    NoCertificate,
    /// The certificate did not parse.
    #[error("client certificate does not parse: {0}")]
    Unparseable(String),
    /// The subject has no common name.
    #[error("client certificate subject has no common name")]
    NoCommonName,
    /// The subject has more than one common name.
    #[error("client certificate subject has {0} common names; exactly one is allowed")]
    ManyCommonNames(usize),
    /// The common name is not a string type.
    #[error("client certificate common name is not a text string")]
    CommonNameNotText,
    /// The common name is not `system:node:<name>`.
    #[error("client certificate common name {0:?} does not start with \"system:node:\"")]
    NotANode(String),
    /// The `<name>` part is not a valid node name.
    #[error("client certificate names node {name:?}, which is not a valid node name: {source}")]
    BadNodeName {
        /// The name after `system:node:`.
        name: String,
        /// Why it is not a node name.
        source: NodeNameError,
    },
    /// The organisations are not exactly `[system:nodes]`.
    #[error("client certificate organisations are {0:?}, not exactly [\"system:nodes\"]")]
    NotInNodesGroup(Vec<String>),
}

impl IdentityError {
    /// A short label for the `reason` of the refused-streams metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoCertificate => "no_client_certificate",
            Self::Unparseable(_) => "unparseable_certificate",
            Self::NoCommonName => "no_common_name",
            Self::ManyCommonNames(_) => "many_common_names",
            Self::CommonNameNotText => "common_name_not_text",
            Self::NotANode(_) => "not_a_node_certificate",
            Self::BadNodeName { .. } => "invalid_node_name",
            Self::NotInNodesGroup(_) => "not_in_nodes_group",
        }
    }
}

/// The node identity of a client certificate that rustls already verified against the
/// client CA bundle (chain, validity, key usage).
pub fn node_identity(cert_der: &[u8]) -> Result<NodeIdentity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    let subject = cert.subject();
    let common_names: Vec<_> = subject.iter_common_name().collect();
    let cn = match common_names.as_slice() {
        [] => return Err(IdentityError::NoCommonName),
        [cn] => cn.as_str().map_err(|_| IdentityError::CommonNameNotText)?,
        many => return Err(IdentityError::ManyCommonNames(many.len())),
    };
    let name = cn
        .strip_prefix(NODE_CN_PREFIX)
        .ok_or_else(|| IdentityError::NotANode(cn.to_owned()))?;
    let node = name
        .parse::<NodeName>()
        .map_err(|source| IdentityError::BadNodeName {
            name: name.to_owned(),
            source,
        })?;
    // Exactly one organisation: a certificate that is also in another group
    // (`system:masters`, say) is not a plain kubelet identity, and the CSR check
    // refuses such a subject too.
    let orgs: Vec<String> = subject
        .iter_organization()
        .take(8)
        .map(|o| o.as_str().unwrap_or("<not text>").to_owned())
        .collect();
    if orgs != [NODES_GROUP] {
        return Err(IdentityError::NotInNodesGroup(orgs));
    }
    Ok(NodeIdentity {
        node,
        serial: hex(cert.raw_serial()),
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    use super::*;

    fn mk_cert(attributes: &[(DnType, &str)]) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for (ty, value) in attributes {
            dn.push(ty.clone(), *value);
        }
        params.distinguished_name = dn;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn a_kubelet_client_certificate_names_its_node() {
        let der = mk_cert(&[
            (DnType::OrganizationName, "system:nodes"),
            (DnType::CommonName, "system:node:worker-1"),
        ]);
        let id = node_identity(&der).expect("identity");
        assert_eq!(id.node.as_str(), "worker-1");
        assert!(!id.serial.is_empty() && id.serial.chars().all(|c| c.is_ascii_hexdigit()));
    }

    // rcgen keeps one value per `DnType`; a custom type with the same OID adds a second
    // attribute of that kind.
    fn second_cn() -> DnType {
        DnType::CustomDnType(vec![2, 5, 4, 3])
    }

    fn second_o() -> DnType {
        DnType::CustomDnType(vec![2, 5, 4, 10])
    }

    #[test]
    fn other_organisations_next_to_system_nodes_are_refused() {
        for orgs in [
            ["system:nodes", "system:masters"],
            ["example", "system:nodes"],
            ["system:nodes", "system:nodes"],
        ] {
            let der = mk_cert(&[
                (DnType::OrganizationName, orgs[0]),
                (second_o(), orgs[1]),
                (DnType::CommonName, "system:node:worker-1"),
            ]);
            let err = node_identity(&der).expect_err("refused");
            assert_eq!(err.metric_label(), "not_in_nodes_group", "{orgs:?}: {err}");
            assert!(err.to_string().contains(orgs[1]), "{err}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_a_precise_reason() {
        let cases: &[(&[(DnType, &str)], &str)] = &[
            (
                &[(DnType::OrganizationName, "system:nodes")],
                "no_common_name",
            ),
            (
                &[
                    (DnType::OrganizationName, "system:nodes"),
                    (DnType::CommonName, "system:node:a"),
                    (second_cn(), "system:node:b"),
                ],
                "many_common_names",
            ),
            (
                &[
                    (DnType::OrganizationName, "system:nodes"),
                    (DnType::CommonName, "system:admin"),
                ],
                "not_a_node_certificate",
            ),
            (
                &[
                    (DnType::OrganizationName, "system:nodes"),
                    (DnType::CommonName, "system:node:"),
                ],
                "invalid_node_name",
            ),
            (
                &[
                    (DnType::OrganizationName, "system:nodes"),
                    (DnType::CommonName, "system:node:Worker_1"),
                ],
                "invalid_node_name",
            ),
            (
                &[(DnType::CommonName, "system:node:worker-1")],
                "not_in_nodes_group",
            ),
            (
                &[
                    (DnType::OrganizationName, "system:masters"),
                    (DnType::CommonName, "system:node:worker-1"),
                ],
                "not_in_nodes_group",
            ),
        ];
        for (attributes, reason) in cases {
            let err = node_identity(&mk_cert(attributes)).expect_err("refused");
            assert_eq!(err.metric_label(), *reason, "{attributes:?}: {err}");
        }
        assert_eq!(
            node_identity(b"not a certificate").map_err(|e| e.metric_label()),
            Err("unparseable_certificate")
        );
    }
}
