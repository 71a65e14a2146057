//! Authentication: who a request is, from its verified client certificate or a bearer token —
//! a static one (here) or a bound ServiceAccount token (`crate::tokens::authenticate_request`).

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use x509_parser::prelude::{FromDer, X509Certificate};

/// The extra key naming the credential a user authenticated with (`user.CredentialIDKey`).
pub const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The superuser group.
pub const MASTERS: &str = "system:masters";
/// The group of kubelets.
pub const NODES: &str = "system:nodes";
/// Username prefix of kubelets.
pub const NODE_PREFIX: &str = "system:node:";

/// An authenticated identity, as kube-apiserver's `user.Info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// Username.
    pub name: String,
    /// UID (empty for certificate users).
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

// === impl UserInfo ===

impl UserInfo {
    /// A user with groups (no implicit groups added).
    pub fn new(name: &str, groups: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// The identity of a ServiceAccount, as its token authenticates.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            uid: String::new(),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// The identity in a (verified) client certificate: CN is the user, each O a group, and
    /// the extra [`CREDENTIAL_ID`] `X509SHA256=<hex SHA-256 of the certificate>`, as
    /// kube-apiserver's `CommonNameUserConversion` (x509.go) sets since 1.32 — so every real
    /// kubelet's CSR carries a non-empty `spec.extra`.
    pub fn from_certificate(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())?
            .to_owned();
        if name.is_empty() {
            return None;
        }
        let groups = cert
            .subject()
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect();
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Some(Self {
            name,
            groups,
            extra: BTreeMap::from([(CREDENTIAL_ID.to_owned(), vec![format!("X509SHA256={hex}")])]),
            ..Self::default()
        })
    }

    /// Adds `system:authenticated`, as every authenticator does.
    pub fn authenticated(mut self) -> Self {
        if !self.in_group(AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.to_owned());
        }
        self
    }

    /// Whether the user is in a group.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node name for a kubelet identity (`system:node:<name>` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        if !self.in_group(NODES) {
            return None;
        }
        self.name
            .strip_prefix(NODE_PREFIX)
            .filter(|n| !n.is_empty())
    }
}

/// Static bearer tokens, like kube-apiserver's `--token-auth-file`.
#[derive(Debug, Default)]
pub struct TokenTable {
    tokens: RwLock<HashMap<String, UserInfo>>,
}

impl TokenTable {
    /// Adds or replaces a token.
    pub fn insert(&self, token: &str, user: UserInfo) {
        let mut t = match self.tokens.write() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        t.insert(token.to_owned(), user);
    }

    /// The user a token authenticates, with `system:authenticated`.
    pub fn lookup(&self, token: &str) -> Option<UserInfo> {
        let t = match self.tokens.read() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        t.get(token).cloned().map(UserInfo::authenticated)
    }
}

/// The bearer token in an `Authorization` header value, if it is one.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = token.trim();
        (!token.is_empty()).then_some(token)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubber_stamp_testkit::pki::Ca;

    #[test]
    fn certificate_subject_becomes_user_and_groups() {
        let ca = Ca::new("ca").expect("ca");
        let leaf = ca.node_client("w1").expect("leaf");
        let user = UserInfo::from_certificate(&leaf.cert_der)
            .expect("user")
            .authenticated();
        assert_eq!(user.name, "system:node:w1");
        assert_eq!(user.groups, ["system:nodes", AUTHENTICATED]);
        assert_eq!(user.node_name(), Some("w1"));
        assert_eq!(UserInfo::new("system:node:w1", &[]).node_name(), None);
    }

    #[test]
    fn tokens_and_bearer_headers() {
        let t = TokenTable::default();
        t.insert("s3cret", UserInfo::service_account("ns", "sa"));
        assert_eq!(bearer("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer("Basic abc"), None);
        let u = t.lookup("s3cret").expect("known");
        assert_eq!(u.name, "system:serviceaccount:ns:sa");
        assert!(u.in_group(AUTHENTICATED));
        assert!(t.lookup("other").is_none());
    }
}
