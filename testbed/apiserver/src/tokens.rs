//! Bound ServiceAccount tokens, as kube-apiserver 1.32 issues and checks them: the
//! `serviceaccounts/token` subresource (`TokenREST.Create`, pkg/registry/core/serviceaccount/
//! storage/token.go, with `ValidateTokenRequest`), the JWTs it signs (`serviceaccount.Claims`
//! in pkg/serviceaccount/claims.go, `jwtTokenGenerator` in pkg/serviceaccount/jwt.go), their
//! authentication (`jwtTokenAuthenticator.AuthenticateToken`, then `validator.Validate`) both
//! as a request's bearer credential and through TokenReview (`tokenreview.REST.Create`,
//! pkg/registry/authentication/tokenreview/storage.go), and the user they stand for
//! (`ServiceAccountInfo.UserInfo`, staging/src/k8s.io/apiserver/pkg/authentication/
//! serviceaccount/util.go). Feature gates as 1.32 has them on: ServiceAccountTokenJTI,
//! ServiceAccountTokenPodNodeInfo, ServiceAccountTokenNodeBinding and its validation.
//!
//! Tokens are ES256 JWTs signed with a P-256 key generated when the cluster starts (its key
//! id derived as `keyIDFromPublicKey` does). Every time a token is issued or checked is read
//! from one clock, which a test moves forward with
//! [`crate::Objects::advance_token_clock`] to make issued tokens expire without waiting.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use k8s_openapi::api::authentication::v1 as authn;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Map, Value, json};

use super::auth::{CREDENTIAL_ID, UserInfo};
use super::object::{check_type_meta, new_uid, normalize};
use super::request::{Ctx, Output, RequestInfo, decode_body};
use super::resources::{Behaviour, ResourceKind, TableStyle, ids, kind, typed};
use super::status::{ApiError, Cause};
use super::store::ObjectKey;
use super::{Reply, State};

/// `--service-account-issuer` of a testbed cluster unless [`crate::ClusterOptions`] says
/// otherwise: the `iss` of every token it issues, the only issuer it accepts.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The API server's audience (`--api-audiences`, which defaults to the issuer): the audience
/// of a token requested without one, and what a request's bearer token and a TokenReview
/// without `spec.audiences` must be meant for.
pub const API_AUDIENCE: &str = DEFAULT_ISSUER;
/// `spec.expirationSeconds` when a TokenRequest leaves it out (`SetDefaults_TokenRequestSpec`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest `spec.expirationSeconds` `ValidateTokenRequest` accepts (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest `spec.expirationSeconds` `ValidateTokenRequest` accepts (2^32 s).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// `--service-account-max-token-expiration` of a testbed cluster unless
/// [`crate::ClusterOptions`] says otherwise: longer requests are shortened to it, with a
/// warning.
pub const DEFAULT_MAX_TOKEN_EXPIRATION: Duration = Duration::from_secs(48 * 3600);
/// The expiry the kubelet asks for its projected tokens
/// (`serviceaccount.WarnOnlyBoundTokenExpirationSeconds`): a pod-bound token for the API
/// server's audiences asked for exactly this long gets [`EXPIRATION_EXTENSION_SECONDS`] and a
/// `warnafter` claim instead, under `--service-account-extend-token-expiration`.
pub const WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS: i64 = 60 * 60 + 7;
/// The extended lifetime of such a token (`serviceaccount.ExpirationExtensionSeconds`, a year).
pub const EXPIRATION_EXTENSION_SECONDS: i64 = 24 * 365 * 60 * 60;
/// The clock skew every time check allows (`jwt.DefaultLeeway`): a token is expired a minute
/// after its `exp`, and a deleted object invalidates its tokens a minute after its
/// `deletionTimestamp`.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// User extra naming the pod a token is bound to (`serviceaccount.PodNameKey`).
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
/// User extra with that pod's uid (`serviceaccount.PodUIDKey`).
pub const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
/// User extra naming the node of that pod, or the node the token is bound to
/// (`serviceaccount.NodeNameKey`).
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
/// User extra with that node's uid, when the Node existed (`serviceaccount.NodeUIDKey`).
pub const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";

/// The error the bearer-token authenticator adds when no token authenticator accepted a
/// token (`bearertoken.invalidToken`).
const INVALID_BEARER_TOKEN: &str = "invalid bearer token";
/// What go-jose (`gopkg.in/go-jose/go-jose.v2`) answers for a signature that does not verify.
const CRYPTO_FAILURE: &str = "go-jose/go-jose: error in cryptographic primitive";
/// Where a P-256 public key's X.509 SubjectPublicKeyInfo starts: the SEQUENCE, the
/// id-ecPublicKey and prime256v1 OIDs, the BIT STRING header; the uncompressed point follows.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The TokenRequest the subresource takes and answers: no stored kind, so not in the
/// resource table, but decoded, validated and refused in its name as one.
static TOKEN_REQUEST: ResourceKind = ResourceKind {
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenRequest",
    plural: "tokenrequests",
    singular: "tokenrequest",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    behaviour: Behaviour::Review,
    table: TableStyle::Generic,
    field_labels: &[],
    field_values: no_fields,
    normalize: typed::<authn::TokenRequest>,
    merge_keys: &[],
};

fn no_fields(_: &Value) -> Vec<Box<str>> {
    Vec::new()
}

/// The token signer and checker of one cluster: its key, its issuer and audiences, its
/// limits and its clock.
#[derive(Debug)]
pub struct Issuer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    key_id: String,
    issuer: String,
    api_audiences: Vec<String>,
    max_expiration_seconds: i64,
    extend_expiration: bool,
    clock_offset_ms: AtomicI64,
}

/// A `{name, uid}` reference of the private claims (`ref` in claims.go).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Ref {
    name: String,
    uid: String,
}

impl Ref {
    fn of(v: &Value) -> Self {
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Self {
            name: s("/metadata/name"),
            uid: s("/metadata/uid"),
        }
    }

    fn from_claim(v: Option<&Value>) -> Option<Self> {
        let v = v.filter(|v| v.is_object())?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        Some(Self {
            name: s("name"),
            uid: s("uid"),
        })
    }

    /// As `json:"…,omitempty"` writes it.
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.name.is_empty() {
            m.insert("name".into(), json!(self.name));
        }
        if !self.uid.is_empty() {
            m.insert("uid".into(), json!(self.uid));
        }
        Value::Object(m)
    }
}

/// What a token is bound to, besides its ServiceAccount.
#[derive(Debug, Default)]
struct Bound {
    pod: Option<Ref>,
    secret: Option<Ref>,
    node: Option<Ref>,
}

/// The identity a valid token authenticates (`serviceaccount.ServiceAccountInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAccountInfo {
    /// Namespace of the ServiceAccount.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// That pod's uid.
    pub pod_uid: String,
    /// The node of the token (the pod's, or the one it is bound to).
    pub node_name: String,
    /// That node's uid, when known.
    pub node_uid: String,
    /// `JTI=<jti>` (`CredentialIDForJTI`).
    pub credential_id: String,
}

impl ServiceAccountInfo {
    /// The user (`ServiceAccountInfo.UserInfo`): `system:serviceaccount:NS:NAME` with the
    /// ServiceAccount's uid, its two groups, and as extra the pod (name and uid, both or
    /// neither), the credential id and the node (the uid only with the name); plus
    /// `system:authenticated`, which the authenticator chain adds to every user.
    pub fn user_info(&self) -> UserInfo {
        let mut user = UserInfo::service_account(&self.namespace, &self.name);
        user.uid.clone_from(&self.uid);
        let mut extra = |k: &str, v: &str| {
            user.extra.insert(k.to_owned(), vec![v.to_owned()]);
        };
        if !self.pod_name.is_empty() && !self.pod_uid.is_empty() {
            extra(POD_NAME_KEY, &self.pod_name);
            extra(POD_UID_KEY, &self.pod_uid);
        }
        if !self.credential_id.is_empty() {
            extra(CREDENTIAL_ID, &self.credential_id);
        }
        if !self.node_name.is_empty() {
            extra(NODE_NAME_KEY, &self.node_name);
            if !self.node_uid.is_empty() {
                extra(NODE_UID_KEY, &self.node_uid);
            }
        }
        user.authenticated()
    }
}

/// What authenticating a bearer token found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authentication {
    /// A user, with the audiences (of those asked for) the credential is good for.
    Authenticated {
        /// Who.
        user: UserInfo,
        /// `status.audiences` of a TokenReview.
        audiences: Vec<String>,
    },
    /// Refused, with the error kube-apiserver's authenticator chain reports.
    Refused(String),
}

/// The claims of a token as go-jose reads them: `jwt.Claims` and the private claims.
#[derive(Debug, Default)]
struct Claims {
    issuer: String,
    audiences: Vec<String>,
    expiry: Option<i64>,
    not_before: Option<i64>,
    issued_at: Option<i64>,
    id: String,
    namespace: String,
    service_account: Ref,
    pod: Option<Ref>,
    secret: Option<Ref>,
    node: Option<Ref>,
}

fn numeric_date(v: Option<&Value>) -> Result<Option<i64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
        Some(other) => Err(format!(
            "json: cannot unmarshal {other} into Go value of type jwt.NumericDate"
        )),
    }
}

impl Claims {
    fn parse(payload: &Value) -> Result<Self, String> {
        let s = |k: &str| {
            payload
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        // `jwt.Audience` is a string or a list of strings.
        let audiences = match payload.get("aud") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(
                    "square/go-jose/jwt: expected string or array value to unmarshal to Audience",
                )?,
            Some(_) => {
                return Err(
                    "square/go-jose/jwt: expected string or array value to unmarshal to Audience"
                        .to_owned(),
                );
            }
        };
        let k8s = payload.get("kubernetes.io");
        let private = |key: &str| k8s.and_then(|k| k.get(key));
        Ok(Self {
            issuer: s("iss"),
            audiences,
            expiry: numeric_date(payload.get("exp"))?,
            not_before: numeric_date(payload.get("nbf"))?,
            issued_at: numeric_date(payload.get("iat"))?,
            id: s("jti"),
            namespace: private("namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            service_account: Ref::from_claim(private("serviceaccount")).unwrap_or_default(),
            pod: Ref::from_claim(private("pod")),
            secret: Ref::from_claim(private("secret")),
            node: Ref::from_claim(private("node")),
        })
    }
}

/// Go's `%q` of a string list (`["a" "b"]`), as `fmt` prints `authenticator.Audiences`.
fn go_quoted(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", items.join(" "))
}

/// `authenticator.Audiences(a).Intersect(b)`: the audiences of `b`, in its order, that `a` has.
fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    b.iter().filter(|x| a.contains(x)).cloned().collect()
}

/// base64url as go-jose decodes a JWS part (`base64URLDecode`: trailing `=` trimmed, then
/// Go's non-strict `RawURLEncoding`, which ignores the unused low bits of the last
/// character — so the last character of a 64-byte ES256 signature can change in its four
/// unused bits and the signature still verifies, on a real API server too).
fn unb64(part: &str) -> Option<Vec<u8>> {
    const GO_RAW_URL: GeneralPurpose = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    GO_RAW_URL.decode(part.trim_end_matches('=')).ok()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Whether an object's `deletionTimestamp` is before `before_ms`.
fn deleted_before(obj: &Value, before_ms: i64) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| t.as_millisecond() < before_ms)
}

// === impl Issuer ===

impl Issuer {
    /// A new signing key for `issuer`, with the API server's audiences (the issuer when
    /// empty, as `--api-audiences` defaults), the longest expiry it grants, and whether it
    /// extends the kubelet's projected tokens.
    pub fn new(
        issuer: &str,
        api_audiences: &[String],
        max_expiration: Duration,
        extend_expiration: bool,
    ) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)
            .map_err(|_| "generating the ServiceAccount token signing key failed".to_owned())?;
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|_| "loading the ServiceAccount token signing key failed".to_owned())?;
        // keyIDFromPublicKey: base64url(SHA-256(the key's PKIX DER)).
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let key_id = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        let api_audiences = if api_audiences.is_empty() {
            vec![issuer.to_owned()]
        } else {
            api_audiences.to_vec()
        };
        Ok(Self {
            key,
            rng,
            key_id,
            issuer: issuer.to_owned(),
            api_audiences,
            max_expiration_seconds: i64::try_from(max_expiration.as_secs()).unwrap_or(i64::MAX),
            extend_expiration,
            clock_offset_ms: AtomicI64::new(0),
        })
    }

    /// The `iss` of the tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The API server's audiences.
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// The `kid` of the tokens.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The token clock, in milliseconds since the epoch: the wall clock plus every
    /// [`Issuer::advance_clock`].
    pub fn now_ms(&self) -> i64 {
        jiff::Timestamp::now().as_millisecond() + self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// Moves the token clock forward.
    pub fn advance_clock(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .clock_offset_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                Some(o.saturating_add(ms))
            });
    }

    /// A compact JWS of `claims` (`jwtTokenGenerator.GenerateToken`).
    fn sign(&self, claims: &Value) -> Result<String, ApiError> {
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.key.sign(&self.rng, input.as_bytes()).map_err(|_| {
            ApiError::internal("failed to generate token: signing failed".to_owned())
        })?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The claims of a new token (`serviceaccount.Claims`): `sub`, `aud`, `iat`, `nbf`, `exp`,
    /// `jti` and the private `kubernetes.io` claims — the namespace, the ServiceAccount, the
    /// pod (with its node, ServiceAccountTokenPodNodeInfo), the secret or the node it is
    /// bound to, and `warnafter` for an extended token; `iss` as the generator adds it.
    #[expect(
        clippy::too_many_arguments,
        reason = "claims.go's Claims, argument for argument"
    )]
    fn claims(
        &self,
        sa: &Value,
        bound: &Bound,
        now_s: i64,
        expiration_seconds: i64,
        warnafter: i64,
        audiences: &[String],
        jti: &str,
    ) -> Value {
        let sa_ref = Ref::of(sa);
        let namespace = sa
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut private = Map::new();
        private.insert("namespace".into(), json!(namespace));
        private.insert("serviceaccount".into(), sa_ref.to_json());
        if let Some(pod) = &bound.pod {
            private.insert("pod".into(), pod.to_json());
            if let Some(node) = &bound.node {
                private.insert("node".into(), node.to_json());
            }
        } else if let Some(secret) = &bound.secret {
            private.insert("secret".into(), secret.to_json());
        } else if let Some(node) = &bound.node {
            private.insert("node".into(), node.to_json());
        }
        if warnafter != 0 {
            private.insert("warnafter".into(), json!(now_s + warnafter));
        }
        json!({
            "iss": self.issuer,
            "sub": format!("system:serviceaccount:{namespace}:{}", sa_ref.name),
            "aud": audiences,
            "iat": now_s,
            "nbf": now_s,
            "exp": now_s + expiration_seconds,
            "jti": jti,
            "kubernetes.io": Value::Object(private),
        })
    }

    /// `jwtTokenAuthenticator.AuthenticateToken` for `requested` audiences: `Ok(None)` when
    /// the token is not one of ours at all (not a JWS, another issuer), an error when it
    /// is but fails a check.
    fn authenticate(
        &self,
        state: &State,
        token: &str,
        requested: &[String],
    ) -> Result<Option<(ServiceAccountInfo, Vec<String>)>, String> {
        // hasCorrectIssuer, then jwt.ParseSigned: anything else is not ours.
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, sig] = parts.as_slice() else {
            return Ok(None);
        };
        let Some(payload_json) = unb64(payload)
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
            .filter(Value::is_object)
        else {
            return Ok(None);
        };
        if payload_json.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Ok(None);
        }
        let Some(header_json) = unb64(header)
            .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
            .filter(Value::is_object)
        else {
            return Ok(None);
        };
        let Some(sig) = unb64(sig) else {
            return Ok(None);
        };
        // The key with the token's key id, then the signature.
        let kid = header_json.get("kid").and_then(Value::as_str).unwrap_or("");
        if !kid.is_empty() && kid != self.key_id {
            return Err("invalid signature, no keys found".to_owned());
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        let signed = format!("{header}.{payload}");
        if header_json.get("alg").and_then(Value::as_str) != Some("ES256")
            || public.verify(signed.as_bytes(), &sig).is_err()
        {
            return Err(CRYPTO_FAILURE.to_owned());
        }
        let claims = Claims::parse(&payload_json)?;
        if claims.issuer != self.issuer {
            return Err(format!("token issuer {:?} is invalid", claims.issuer));
        }
        let token_audiences = if claims.audiences.is_empty() {
            // Only the API server's audiences for a token without any (a legacy token).
            self.api_audiences.clone()
        } else {
            claims.audiences.clone()
        };
        let audiences = intersect(&token_audiences, requested);
        if audiences.is_empty() {
            return Err(format!(
                "token audiences {} is invalid for the target audiences {}",
                go_quoted(&token_audiences),
                go_quoted(requested)
            ));
        }
        Ok(Some((self.validate(state, &claims)?, audiences)))
    }

    /// `validator.Validate` (claims.go): the times with [`LEEWAY`], then that the
    /// ServiceAccount, and the secret, pod or node the token is bound to, still exist with
    /// the uid the token names and were not deleted more than [`LEEWAY`] ago.
    fn validate(&self, state: &State, c: &Claims) -> Result<ServiceAccountInfo, String> {
        let now = self.now_ms();
        let leeway = i64::try_from(LEEWAY.as_millis()).unwrap_or(i64::MAX);
        // jwt.Claims.ValidateWithLeeway: nbf, exp, iat.
        if c.not_before.is_some_and(|nbf| now + leeway < nbf * 1000) {
            return Err("service account token is not valid yet".to_owned());
        }
        if c.expiry.is_some_and(|exp| now - leeway > exp * 1000) {
            return Err("service account token has expired".to_owned());
        }
        if c.issued_at.is_some_and(|iat| now + leeway < iat * 1000) {
            return Err("service account token is issued in the future".to_owned());
        }
        let deleted_before_ms = now - leeway;
        let invalidated = || "service account token has been invalidated".to_owned();
        let ns = c.namespace.as_str();
        let get = |id, namespace: &str, name: &str| -> Option<Value> {
            state
                .store
                .get(id, &ObjectKey::new(namespace, name))
                .and_then(|o| o.value().ok())
        };
        let sa_ref = &c.service_account;
        let sa = get(ids::service_accounts(), ns, &sa_ref.name).ok_or_else(|| {
            format!(
                "{} {:?} not found",
                kind(ids::service_accounts()).plural,
                sa_ref.name
            )
        })?;
        let sa_uid = Ref::of(&sa).uid;
        if sa_uid != sa_ref.uid {
            return Err(format!(
                "service account UID ({sa_uid}) does not match claim ({})",
                sa_ref.uid
            ));
        }
        if deleted_before(&sa, deleted_before_ms) {
            return Err(format!(
                "service account {ns}/{} has been deleted",
                sa_ref.name
            ));
        }
        if let Some(secret_ref) = &c.secret {
            let secret = get(ids::secrets(), ns, &secret_ref.name).ok_or_else(invalidated)?;
            let uid = Ref::of(&secret).uid;
            if uid != secret_ref.uid {
                return Err(format!(
                    "secret UID ({uid}) does not match service account secret ref claim ({})",
                    secret_ref.uid
                ));
            }
            if deleted_before(&secret, deleted_before_ms) {
                return Err(invalidated());
            }
        }
        let mut info = ServiceAccountInfo {
            namespace: ns.to_owned(),
            name: sa_ref.name.clone(),
            uid: sa_ref.uid.clone(),
            credential_id: if c.id.is_empty() {
                String::new()
            } else {
                format!("JTI={}", c.id)
            },
            ..ServiceAccountInfo::default()
        };
        if let Some(pod_ref) = &c.pod {
            let pod = get(ids::pods(), ns, &pod_ref.name).ok_or_else(invalidated)?;
            let uid = Ref::of(&pod).uid;
            if uid != pod_ref.uid {
                return Err(format!(
                    "pod UID ({uid}) does not match service account pod ref claim ({})",
                    pod_ref.uid
                ));
            }
            if deleted_before(&pod, deleted_before_ms) {
                return Err(invalidated());
            }
            info.pod_name.clone_from(&pod_ref.name);
            info.pod_uid.clone_from(&pod_ref.uid);
        }
        if let Some(node_ref) = &c.node {
            if c.pod.is_none() {
                // A token bound to the Node itself (ServiceAccountTokenNodeBindingValidation).
                let node = get(ids::nodes(), "", &node_ref.name).ok_or_else(invalidated)?;
                let uid = Ref::of(&node).uid;
                if uid != node_ref.uid {
                    return Err(format!(
                        "node UID ({uid}) does not match service account node ref claim ({})",
                        node_ref.uid
                    ));
                }
                if deleted_before(&node, deleted_before_ms) {
                    return Err(invalidated());
                }
            }
            // For a pod-bound token the node claims are only read.
            info.node_name.clone_from(&node_ref.name);
            info.node_uid.clone_from(&node_ref.uid);
        }
        Ok(info)
    }
}

/// Authenticates a bearer token for `audiences` as kube-apiserver's authenticator chain
/// does: the static tokens (`--token-auth-file`, wrapped by `WrapAudienceAgnosticToken`: good
/// for the API server's audiences only), then the ServiceAccount token authenticator. A
/// refusal reads as kube-apiserver's chain words it (the `utilerrors.Aggregate` of the
/// bearer-token authenticator's `invalidToken` and the token authenticators' errors, as
/// real clusters report it in TokenReviews and in "Unable to authenticate the request"):
/// `invalid bearer token` when no authenticator recognised the token, `[invalid bearer
/// token, <the ServiceAccount authenticator's error>]` when the token is one of ours but
/// fails a check (e.g. `[invalid bearer token, service account token has expired]`).
pub fn authenticate(state: &State, token: &str, audiences: &[String]) -> Authentication {
    let api = state.issuer.api_audiences();
    if let Some(user) = state.tokens.lookup(token) {
        let granted = intersect(api, audiences);
        if !granted.is_empty() {
            return Authentication::Authenticated {
                user,
                audiences: granted,
            };
        }
    }
    match state.issuer.authenticate(state, token, audiences) {
        Ok(Some((info, audiences))) => Authentication::Authenticated {
            user: info.user_info(),
            audiences,
        },
        Ok(None) => Authentication::Refused(INVALID_BEARER_TOKEN.to_owned()),
        Err(e) => Authentication::Refused(format!("[{INVALID_BEARER_TOKEN}, {e}]")),
    }
}

/// The user a request's bearer token authenticates, for the API server's own audiences
/// (the authentication filter asks for them, `WithAudiences(apiAuds)`).
pub fn authenticate_request(state: &State, token: &str) -> Option<UserInfo> {
    match authenticate(state, token, state.issuer.api_audiences()) {
        Authentication::Authenticated { user, .. } => Some(user),
        Authentication::Refused(_) => None,
    }
}

fn user_json(user: &UserInfo) -> Value {
    let mut u = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        u["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        u["extra"] = json!(user.extra);
    }
    u
}

/// POST of a TokenReview (`tokenreview.REST.Create`): `spec.token` is required (400); the
/// token is authenticated for `spec.audiences`, or the API server's audiences when empty.
/// `status.authenticated`, `status.user` and `status.audiences` (those of the requested
/// ones the token is good for) on success; `status.error` otherwise — 201 either way.
pub fn review(
    state: &State,
    mut obj: Value,
    output: Output,
    warnings: Vec<String>,
) -> Result<Reply, ApiError> {
    let token = obj
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let requested: Vec<String> = match obj.pointer("/spec/audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => state.issuer.api_audiences().to_vec(),
    };
    obj["status"] = match authenticate(state, &token, &requested) {
        Authentication::Authenticated { user, audiences } => {
            json!({"authenticated": true, "user": user_json(&user), "audiences": audiences})
        }
        Authentication::Refused(error) => json!({"user": {}, "error": error}),
    };
    Ok(Reply::value(201, &obj, output).with_warnings(warnings))
}

/// `ValidateTokenRequest`: `spec.expirationSeconds` from 10 minutes to 2^32 seconds.
fn validate_token_request(expiration_seconds: i64) -> Vec<Cause> {
    let mut causes = Vec::new();
    if expiration_seconds < MIN_EXPIRATION_SECONDS {
        causes.push(Cause::invalid(
            "spec.expirationSeconds",
            &expiration_seconds.to_string(),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration_seconds > MAX_EXPIRATION_SECONDS {
        causes.push(Cause::invalid(
            "spec.expirationSeconds",
            &expiration_seconds.to_string(),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    causes
}

/// 409 "Operation cannot be fulfilled on KIND \"NAME\": …" for a bound object, as
/// `errors.NewConflict(GroupResource{Resource: kind}, …)` words it.
fn bound_conflict(kind: &str, name: &str, ref_uid: &str) -> ApiError {
    ApiError {
        code: 409,
        reason: "Conflict",
        message: format!(
            "Operation cannot be fulfilled on {kind} {name:?}: the UID in the bound object reference ({ref_uid}) does not match the UID in record. The object might have been deleted and then recreated"
        ),
        details: Some(json!({"name": name, "group": "", "kind": kind})),
        retry_after: None,
    }
}

/// The NodeRestriction admission plugin on a node's TokenRequest (`admitServiceAccount`): it
/// must be bound, with a uid, to a pod scheduled on that node.
fn node_restriction(
    state: &State,
    node: &str,
    namespace: &str,
    sa: &str,
    req: &Value,
) -> Result<(), ApiError> {
    let forbidden = |why: &str| ApiError::forbidden(kind(ids::service_accounts()), sa, why);
    let s = |p: &str| req.pointer(p).and_then(Value::as_str).unwrap_or("");
    if s("/spec/boundObjectRef/apiVersion") != "v1"
        || s("/spec/boundObjectRef/kind") != "Pod"
        || s("/spec/boundObjectRef/name").is_empty()
    {
        return Err(forbidden("node requested token not bound to a pod"));
    }
    let (name, uid) = (
        s("/spec/boundObjectRef/name"),
        s("/spec/boundObjectRef/uid"),
    );
    if uid.is_empty() {
        return Err(forbidden(
            "node requested token with a pod binding without a uid",
        ));
    }
    let pod = state
        .store
        .get(ids::pods(), &ObjectKey::new(namespace, name))
        .ok_or_else(|| ApiError::not_found(kind(ids::pods()), name))?
        .value()?;
    if Ref::of(&pod).uid != uid {
        return Err(forbidden(&format!(
            "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
        )));
    }
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return Err(forbidden(
            "node requested token bound to a pod scheduled on a different node",
        ));
    }
    Ok(())
}

/// The group and version of an `apiVersion` (`schema.ParseGroupVersion`; `None` when it has
/// more than one `/`, which `FromAPIVersionAndKind` then leaves empty).
fn group_version(api_version: &str) -> (String, String) {
    match api_version.matches('/').count() {
        0 => (String::new(), api_version.to_owned()),
        1 => match api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), String::new()),
        },
        _ => (String::new(), String::new()),
    }
}

/// POST of a TokenRequest to `serviceaccounts/NAME/token` (`TokenREST.Create`, 1.32): the
/// body's name and namespace, if set, must be the ServiceAccount's (422); the ServiceAccount
/// must exist (404); audiences default to the API server's, `expirationSeconds` to 3600, and
/// `ValidateTokenRequest` refuses less than 10 minutes or more than 2^32 s (422); a node's
/// request passes NodeRestriction. A `boundObjectRef` to a Pod (which must run as this
/// ServiceAccount: 400 otherwise; its node goes into the token, with the Node's uid when
/// the Node exists), a Node or a Secret must exist (404) with the uid given (409); any other
/// kind is 400. Longer than `--service-account-max-token-expiration` is shortened, with a
/// warning; the kubelet's 3607 s for a pod is extended to a year (`warnafter` 3607 s). The
/// answer is the TokenRequest with `status.token` and `status.expirationTimestamp` (from the
/// expiry granted, not the extension), 201.
pub fn create_token(ctx: &Ctx<'_>, info: &RequestInfo) -> Result<Reply, ApiError> {
    let state: &State = ctx.state;
    let k = &TOKEN_REQUEST;
    let (namespace, name) = (info.namespace.as_str(), info.name.as_str());
    let mut warnings = Vec::new();
    let body = decode_body(ctx.content_type, &ctx.body)?;
    check_type_meta(k, &body)?;
    let mut req = normalize(k, ctx.query, body, &mut warnings)?;
    // The name and namespace in the body, if any, must be the URL's.
    for (field, want, what) in [
        ("name", name, "name"),
        ("namespace", namespace, "namespace"),
    ] {
        let given = req
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !given.is_empty() && given != want {
            return Err(ApiError::invalid(
                k,
                name,
                vec![Cause::invalid(
                    format!("metadata.{field}"),
                    &format!("{given:?}"),
                    &format!("must match the service account {what} if specified"),
                )],
            ));
        }
    }
    let sa = state
        .store
        .get(ids::service_accounts(), &ObjectKey::new(namespace, name))
        .ok_or_else(|| ApiError::not_found(kind(ids::service_accounts()), name))?
        .value()?;
    // Defaults; the system fields of the body are wiped (WipeObjectMetaSystemFields) and
    // the creation time is the issue time.
    let now_ms = state.issuer.now_ms();
    let now_s = now_ms.div_euclid(1000);
    let spec = req
        .get("spec")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = state.issuer.api_audiences().to_vec();
    }
    let mut expiration_seconds = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    {
        let meta = req
            .as_object_mut()
            .map(|m| m.entry("metadata").or_insert_with(|| json!({})));
        if let Some(Value::Object(meta)) = meta {
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.remove(f);
            }
            meta.insert("name".into(), json!(name));
            meta.insert("namespace".into(), json!(namespace));
            meta.insert("creationTimestamp".into(), json!(rfc3339(now_ms)));
        }
    }
    let causes = validate_token_request(expiration_seconds);
    if !causes.is_empty() {
        return Err(ApiError::invalid(k, "", causes));
    }
    if let Some(node) = ctx.user.node_name() {
        node_restriction(state, node, namespace, name, &req)?;
    }
    let mut bound = Bound::default();
    if let Some(r) = spec.get("boundObjectRef").filter(|v| v.is_object()) {
        let s = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or("");
        let (group, version) = group_version(s("apiVersion"));
        let (ref_kind, ref_name, ref_uid) = (s("kind"), s("name"), s("uid"));
        let get = |id, ns: &str| {
            state
                .store
                .get(id, &ObjectKey::new(ns, ref_name))
                .ok_or_else(|| ApiError::not_found(kind(id), ref_name))
                .and_then(|o| o.value())
        };
        let uid = match (group.as_str(), ref_kind) {
            ("", "Pod") => {
                let pod = get(ids::pods(), namespace)?;
                if pod
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    != Some(name)
                {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
                    )));
                }
                // ServiceAccountTokenPodNodeInfo: the pod's node, with its uid if the Node
                // exists (a missing Node still puts the name in).
                let node_name = pod
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !node_name.is_empty() {
                    bound.node = Some(
                        state
                            .store
                            .get(ids::nodes(), &ObjectKey::new("", node_name))
                            .and_then(|n| n.value().ok())
                            .map_or_else(
                                || Ref {
                                    name: node_name.to_owned(),
                                    uid: String::new(),
                                },
                                |n| Ref::of(&n),
                            ),
                    );
                }
                let pod = Ref::of(&pod);
                let uid = pod.uid.clone();
                bound.pod = Some(pod);
                uid
            }
            ("", "Node") => {
                let node = Ref::of(&get(ids::nodes(), "")?);
                let uid = node.uid.clone();
                bound.node = Some(node);
                uid
            }
            ("", "Secret") => {
                let secret = Ref::of(&get(ids::secrets(), namespace)?);
                let uid = secret.uid.clone();
                bound.secret = Some(secret);
                uid
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {group}/{version}, Kind={ref_kind}"
                )));
            }
        };
        if !ref_uid.is_empty() && ref_uid != uid {
            return Err(bound_conflict(ref_kind, ref_name, ref_uid));
        }
    }
    let max = state.issuer.max_expiration_seconds;
    if max > 0 && expiration_seconds > max {
        warnings.push(format!(
            "requested expiration of {expiration_seconds} seconds shortened to {max} seconds"
        ));
        expiration_seconds = max;
    }
    // The safe transition of projected tokens: warn after the requested expiry, fail after
    // the extended one; only for pod-bound tokens for the API server's own audiences.
    let mut warnafter = 0;
    let mut exp = expiration_seconds;
    if state.issuer.extend_expiration
        && bound.pod.is_some()
        && expiration_seconds == WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS
        && audiences
            .iter()
            .all(|a| state.issuer.api_audiences().contains(a))
    {
        warnafter = exp;
        exp = EXPIRATION_EXTENSION_SECONDS;
    }
    let claims = state
        .issuer
        .claims(&sa, &bound, now_s, exp, warnafter, &audiences, &new_uid());
    let token = state.issuer.sign(&claims)?;
    req["spec"]["audiences"] = json!(audiences);
    req["spec"]["expirationSeconds"] = json!(expiration_seconds);
    req["apiVersion"] = json!(k.api_version());
    req["kind"] = json!(k.kind);
    req["status"] = json!({
        "token": token,
        "expirationTimestamp": rfc3339(now_ms + expiration_seconds * 1000),
    });
    Ok(Reply::value(201, &req, ctx.output).with_warnings(warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer {
        Issuer::new(DEFAULT_ISSUER, &[], DEFAULT_MAX_TOKEN_EXPIRATION, true).expect("issuer")
    }

    #[test]
    fn tokens_verify_only_with_their_key_and_unchanged() {
        let iss = issuer();
        let token = iss.sign(&json!({"iss": DEFAULT_ISSUER})).expect("signed");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&unb64(parts[0]).expect("b64")).expect("header json");
        assert_eq!(header, json!({"alg": "ES256", "kid": iss.key_id()}));
        assert_eq!(unb64(parts[2]).map(|s| s.len()), Some(64), "JWS r||s");
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            iss.key.public_key().as_ref(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(
            public
                .verify(signed.as_bytes(), &unb64(parts[2]).expect("sig"))
                .is_ok()
        );
        let other = issuer();
        assert_ne!(other.key_id(), iss.key_id());
        let forged = format!(
            "{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(json!({"iss": "x"}).to_string())
        );
        assert!(
            public
                .verify(forged.as_bytes(), &unb64(parts[2]).expect("sig"))
                .is_err()
        );
    }

    #[test]
    fn claims_as_claims_go_writes_them() {
        let iss = issuer();
        let sa = json!({"metadata": {"name": "sa", "namespace": "ns", "uid": "u1"}});
        let bound = Bound {
            pod: Some(Ref {
                name: "p".into(),
                uid: "u2".into(),
            }),
            secret: None,
            node: Some(Ref {
                name: "n".into(),
                uid: String::new(),
            }),
        };
        let c = iss.claims(&sa, &bound, 1000, 3600, 0, &["a".to_owned()], "j");
        assert_eq!(
            c,
            json!({"iss": DEFAULT_ISSUER, "sub": "system:serviceaccount:ns:sa", "aud": ["a"],
                   "iat": 1000, "nbf": 1000, "exp": 4600, "jti": "j",
                   "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa", "uid": "u1"},
                                     "pod": {"name": "p", "uid": "u2"}, "node": {"name": "n"}}})
        );
        let parsed = Claims::parse(&c).expect("parses");
        assert_eq!(parsed.audiences, ["a"]);
        assert_eq!((parsed.expiry, parsed.not_before), (Some(4600), Some(1000)));
        assert_eq!(parsed.node.map(|n| n.uid), Some(String::new()));
        assert_eq!(
            Claims::parse(&json!({"aud": "one"}))
                .expect("string aud")
                .audiences,
            ["one"]
        );
    }

    #[test]
    fn go_formatting_and_intersection() {
        let a = vec!["x".to_owned(), "y".to_owned()];
        assert_eq!(go_quoted(&a), r#"["x" "y"]"#);
        assert_eq!(intersect(&a, &["y".to_owned(), "z".to_owned()]), ["y"]);
        assert_eq!(group_version("v1"), (String::new(), "v1".to_owned()));
        assert_eq!(
            group_version("apps/v1"),
            ("apps".to_owned(), "v1".to_owned())
        );
    }

    #[test]
    fn the_clock_only_moves_forward_by_what_it_is_told() {
        let iss = issuer();
        let before = iss.now_ms();
        iss.advance_clock(Duration::from_secs(3600));
        let after = iss.now_ms();
        assert!(after - before >= 3_600_000 && after - before < 3_660_000);
    }

    #[test]
    fn user_info_as_util_go_builds_it() {
        let info = ServiceAccountInfo {
            namespace: "ns".into(),
            name: "sa".into(),
            uid: "u".into(),
            pod_name: "p".into(),
            pod_uid: String::new(),
            node_name: "n".into(),
            node_uid: String::new(),
            credential_id: "JTI=j".into(),
        };
        let user = info.user_info();
        assert_eq!(user.name, "system:serviceaccount:ns:sa");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns",
                "system:authenticated"
            ]
        );
        let keys: Vec<&str> = user.extra.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [CREDENTIAL_ID, NODE_NAME_KEY],
            "pod needs its uid too"
        );
    }
}
