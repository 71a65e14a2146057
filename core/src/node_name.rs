//! `NodeName`: a Kubernetes node name, checked once where it enters: from a CSR's subject
//! (check 3) or from an agent's verified client certificate (the attestation channel).
//! Both name a node the same way, `CN=system:node:<name>` with `O=system:nodes`.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest DNS-1123 subdomain, in bytes.
pub const MAX_NODE_NAME_BYTES: usize = 253;
/// The common name of a kubelet's certificate (and of its CSRs) is this prefix and the
/// node's name.
pub const NODE_CN_PREFIX: &str = "system:node:";
/// The only organisation (group) of a kubelet's certificate and of its CSRs.
pub const NODES_GROUP: &str = "system:nodes";

/// A node name that is a valid DNS-1123 subdomain, exactly what Kubernetes accepts as
/// `metadata.name` of a Node (`IsDNS1123Subdomain`): lower-case alphanumerics, `-` and `.`,
/// each dot-separated part non-empty and not starting or ending with `-`, at most 253
/// bytes. Unlike a DNS label, a part may be longer than 63 bytes: Kubernetes allows it, and
/// such a node's name can still be checked (it only cannot be a DNS SAN).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(Arc<str>);

/// Why a string is not a node name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    /// The name is empty.
    #[error("node name is empty")]
    Empty,
    /// The name is longer than 253 bytes.
    #[error("node name is {0} bytes long, the limit is {MAX_NODE_NAME_BYTES}")]
    TooLong(usize),
    /// The name contains upper-case letters (Kubernetes node names are lower case).
    #[error("node name contains upper-case letters; Kubernetes node names are lower case")]
    UpperCase,
    /// The name contains a character outside `[a-z0-9.-]`.
    #[error("node name contains {0:?}; only lower-case letters, digits, '-' and '.' are allowed")]
    BadCharacter(char),
    /// A dot-separated part is empty or starts or ends with `-`.
    #[error("node name part {0:?} must be non-empty and start and end with a letter or digit")]
    BadPart(String),
}

// === impl NodeName ===

impl NodeName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = NodeNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NodeNameError::Empty);
        }
        if s.len() > MAX_NODE_NAME_BYTES {
            return Err(NodeNameError::TooLong(s.len()));
        }
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(NodeNameError::UpperCase);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
        {
            return Err(NodeNameError::BadCharacter(c));
        }
        if let Some(part) = s
            .split('.')
            .find(|p| p.is_empty() || p.starts_with('-') || p.ends_with('-'))
        {
            return Err(NodeNameError::BadPart(part.to_owned()));
        }
        Ok(Self(Arc::from(s)))
    }
}

impl Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_node_names() {
        for ok in ["worker-1", "a", "ip-10-0-0-1.ec2.internal", "0node", "n.0"] {
            assert_eq!(
                ok.parse::<NodeName>().map(|n| n.to_string()),
                Ok(ok.to_owned())
            );
        }
    }

    #[test]
    fn refuses_what_kubernetes_refuses() {
        assert_eq!("".parse::<NodeName>(), Err(NodeNameError::Empty));
        assert_eq!("Worker".parse::<NodeName>(), Err(NodeNameError::UpperCase));
        assert_eq!(
            "a_b".parse::<NodeName>(),
            Err(NodeNameError::BadCharacter('_'))
        );
        assert_eq!(
            "a\0".parse::<NodeName>(),
            Err(NodeNameError::BadCharacter('\0'))
        );
        assert_eq!(
            "a..b".parse::<NodeName>(),
            Err(NodeNameError::BadPart(String::new()))
        );
        assert_eq!(
            "node.".parse::<NodeName>(),
            Err(NodeNameError::BadPart(String::new()))
        );
        assert_eq!(
            "-a".parse::<NodeName>(),
            Err(NodeNameError::BadPart("-a".into()))
        );
        assert_eq!(
            "a.b-".parse::<NodeName>(),
            Err(NodeNameError::BadPart("b-".into()))
        );
        // A part longer than a DNS label is a Kubernetes node name all the same.
        assert!("a".repeat(64).parse::<NodeName>().is_ok());
        let long = "a".repeat(254);
        assert_eq!(long.parse::<NodeName>(), Err(NodeNameError::TooLong(254)));
        assert!("a".repeat(253).parse::<NodeName>().is_ok());
    }
}
