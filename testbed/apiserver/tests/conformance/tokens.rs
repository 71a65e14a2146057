//! Bound ServiceAccount tokens through kube-rs, as kube-apiserver 1.32 issues and checks
//! them: TokenRequests (`TokenREST.Create`, `ValidateTokenRequest`), the JWTs
//! (`serviceaccount.Claims`), TokenReviews (`tokenreview.REST.Create` over
//! `jwtTokenAuthenticator.AuthenticateToken` and `validator.Validate`), the user they stand
//! for (`ServiceAccountInfo.UserInfo`), their use as bearer credentials, the Node authorizer
//! and NodeRestriction on a node's requests, and the pods they are bound to.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, SelfSubjectReview, TokenRequest, TokenRequestSpec, TokenReview,
    TokenReviewSpec, TokenReviewStatus,
};
use k8s_openapi::api::core::v1::{
    Container, Namespace, Node, Pod, PodSpec, Secret, ServiceAccount,
};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use rubber_stamp_apiserver::tokens::{API_AUDIENCE, DEFAULT_ISSUER, LEEWAY};
use rubber_stamp_apiserver::{Auth, Cluster, ClusterOptions, Credentials, UserInfo};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const NS: &str = "apps";
const SA: &str = "app";
const POD: &str = "web";
const NODE: &str = "node-1";

fn api_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Option<(u16, String, String)> {
    match r {
        Err(kube::Error::Api(s)) => Some((s.code, s.reason.clone(), s.message.clone())),
        _ => None,
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn pod(name: &str, service_account: Option<&str>, node: Option<&str>) -> Pod {
    Pod {
        metadata: meta(name),
        spec: Some(PodSpec {
            service_account_name: service_account.map(str::to_owned),
            node_name: node.map(str::to_owned),
            containers: vec![Container {
                name: "main".to_owned(),
                image: Some("registry.invalid/app:1.0".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn bound_to(kind: &str, api_version: &str, name: &str, uid: Option<&str>) -> BoundObjectReference {
    BoundObjectReference {
        kind: Some(kind.to_owned()),
        api_version: Some(api_version.to_owned()),
        name: Some(name.to_owned()),
        uid: uid.map(str::to_owned),
    }
}

fn token_request(
    audiences: &[&str],
    expiration_seconds: Option<i64>,
    bound: Option<BoundObjectReference>,
) -> TokenRequest {
    TokenRequest {
        metadata: ObjectMeta::default(),
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            bound_object_ref: bound,
            expiration_seconds,
        },
        status: None,
    }
}

fn token_of(r: &TokenRequest) -> Result<String, Box<dyn std::error::Error>> {
    Ok(r.status.as_ref().ok_or("no status")?.token.clone())
}

/// The JOSE header and the claims of a compact JWS.
fn decode_jwt(token: &str) -> Result<(Value, Value), Box<dyn std::error::Error>> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, _] = parts.as_slice() else {
        return Err(format!("not a compact JWS: {token}").into());
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok((
        serde_json::from_slice(&b64.decode(header)?)?,
        serde_json::from_slice(&b64.decode(payload)?)?,
    ))
}

/// A cluster with namespace `apps`, ServiceAccount `apps/app`, Node `node-1` and pod
/// `apps/web` running as `app` on `node-1`; and the admin's client.
struct Bed {
    cluster: Cluster,
    admin: kube::Client,
}

impl Bed {
    async fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cluster = Cluster::start(ClusterOptions::default()).await?;
        let admin = cluster.client(&cluster.admin()?).await?;
        Api::<Namespace>::all(admin.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: meta(NS),
                    ..Namespace::default()
                },
            )
            .await?;
        Api::<Node>::all(admin.clone())
            .create(
                &PostParams::default(),
                &Node {
                    metadata: meta(NODE),
                    ..Node::default()
                },
            )
            .await?;
        let bed = Self { cluster, admin };
        bed.service_accounts()
            .create(
                &PostParams::default(),
                &ServiceAccount {
                    metadata: meta(SA),
                    ..ServiceAccount::default()
                },
            )
            .await?;
        bed.pods()
            .create(&PostParams::default(), &pod(POD, Some(SA), Some(NODE)))
            .await?;
        Ok(bed)
    }

    fn service_accounts(&self) -> Api<ServiceAccount> {
        Api::namespaced(self.admin.clone(), NS)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), NS)
    }

    fn reviews(&self) -> Api<TokenReview> {
        Api::all(self.admin.clone())
    }

    async fn uid_of<K>(
        &self,
        api: &Api<K>,
        name: &str,
    ) -> Result<String, Box<dyn std::error::Error>>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        Ok(api.get(name).await?.meta().uid.clone().ok_or("no uid")?)
    }

    async fn request(&self, req: &TokenRequest) -> Result<TokenRequest, kube::Error> {
        self.service_accounts()
            .create_token_request(SA, &PostParams::default(), req)
            .await
    }

    async fn review(
        &self,
        token: &str,
        audiences: &[&str],
    ) -> Result<TokenReviewStatus, Box<dyn std::error::Error>> {
        let review = TokenReview {
            metadata: ObjectMeta::default(),
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!audiences.is_empty())
                    .then(|| audiences.iter().map(|a| (*a).to_owned()).collect()),
            },
            status: None,
        };
        let answered = self
            .reviews()
            .create(&PostParams::default(), &review)
            .await?;
        Ok(answered.status.ok_or("a TokenReview always has a status")?)
    }

    /// The error a TokenReview of `token` reports (asserting it is not authenticated).
    async fn refusal(
        &self,
        token: &str,
        audiences: &[&str],
    ) -> Result<String, Box<dyn std::error::Error>> {
        let status = self.review(token, audiences).await?;
        assert_ne!(status.authenticated, Some(true), "{status:?}");
        Ok(status.error.ok_or("a refusal has an error")?)
    }

    /// A kube-rs client presenting `token` as its bearer credential.
    async fn bearer(&self, token: &str) -> Result<kube::Client, Box<dyn std::error::Error>> {
        Ok(self
            .cluster
            .client(&Credentials {
                user: UserInfo::default(),
                auth: Auth::Token(token.to_owned()),
            })
            .await?)
    }
}

/// `TokenREST.Create` then `tokenreview.REST.Create`: a pod-bound token carries the claims
/// `serviceaccount.Claims` writes (the pod's node with ServiceAccountTokenPodNodeInfo, a
/// `jti` with ServiceAccountTokenJTI), and reviews as the user `ServiceAccountInfo.UserInfo`
/// builds — extra pod, node and credential id; `status.audiences` is the intersection with
/// the audiences asked for (`Audiences.Intersect`). Without audiences a token is for the API
/// server and authenticates requests as the same user (the bearer-token authenticator).
#[tokio::test]
async fn an_issued_token_reviews_as_its_service_account_pod_and_node() -> TestResult {
    let bed = Bed::start().await?;
    let sa_uid = bed.uid_of(&bed.service_accounts(), SA).await?;
    let pod_uid = bed.uid_of(&bed.pods(), POD).await?;
    let node_uid = bed
        .uid_of(&Api::<Node>::all(bed.admin.clone()), NODE)
        .await?;

    let before = jiff::Timestamp::now().as_second();
    let issued = bed
        .request(&token_request(
            &["vault"],
            Some(1200),
            Some(bound_to("Pod", "v1", POD, Some(&pod_uid))),
        ))
        .await?;
    assert_eq!(issued.metadata.name.as_deref(), Some(SA));
    assert_eq!(issued.metadata.namespace.as_deref(), Some(NS));
    assert!(issued.metadata.creation_timestamp.is_some());
    assert_eq!(issued.spec.audiences, ["vault"]);
    assert_eq!(issued.spec.expiration_seconds, Some(1200));
    let status = issued.status.clone().ok_or("status")?;
    let expires = status.expiration_timestamp.0.as_second();
    assert!(
        (before + 1200..=jiff::Timestamp::now().as_second() + 1200).contains(&expires),
        "expirationTimestamp is the issue time plus 1200 s: {expires}"
    );

    let (header, claims) = decode_jwt(&status.token)?;
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(claims["iss"], DEFAULT_ISSUER);
    assert_eq!(claims["sub"], "system:serviceaccount:apps:app");
    assert_eq!(claims["aud"], json!(["vault"]));
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().ok_or("iat")?,
        claims["nbf"].as_i64().ok_or("nbf")?,
        claims["exp"].as_i64().ok_or("exp")?,
    );
    assert_eq!((nbf, exp - iat), (iat, 1200));
    assert_eq!(exp, expires, "exp is the expirationTimestamp");
    let jti = claims["jti"].as_str().ok_or("jti")?.to_owned();
    assert_eq!(jti.len(), 36, "a UUID: {jti}");
    assert_eq!(
        claims["kubernetes.io"],
        json!({"namespace": NS,
               "serviceaccount": {"name": SA, "uid": sa_uid},
               "pod": {"name": POD, "uid": pod_uid},
               "node": {"name": NODE, "uid": node_uid}})
    );

    let reviewed = bed.review(&status.token, &["vault", "other"]).await?;
    assert_eq!(reviewed.authenticated, Some(true), "{reviewed:?}");
    assert_eq!(reviewed.error, None);
    assert_eq!(reviewed.audiences, Some(vec!["vault".to_owned()]));
    let user = reviewed.user.ok_or("user")?;
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:apps:app")
    );
    assert_eq!(user.uid.as_deref(), Some(sa_uid.as_str()));
    assert_eq!(
        user.groups,
        Some(vec![
            "system:serviceaccounts".to_owned(),
            "system:serviceaccounts:apps".to_owned(),
            "system:authenticated".to_owned(),
        ])
    );
    let extra = |v: &str| vec![v.to_owned()];
    assert_eq!(
        user.extra,
        Some(BTreeMap::from([
            (
                "authentication.kubernetes.io/credential-id".to_owned(),
                extra(&format!("JTI={jti}"))
            ),
            (
                "authentication.kubernetes.io/node-name".to_owned(),
                extra(NODE)
            ),
            (
                "authentication.kubernetes.io/node-uid".to_owned(),
                extra(&node_uid)
            ),
            (
                "authentication.kubernetes.io/pod-name".to_owned(),
                extra(POD)
            ),
            (
                "authentication.kubernetes.io/pod-uid".to_owned(),
                extra(&pod_uid)
            ),
        ]))
    );

    // A token for another audience is no credential for the API server (401)...
    let refused = bed.bearer(&status.token).await?;
    let (code, _, _) =
        api_code(Api::<ServiceAccount>::namespaced(refused, NS).get(SA).await).ok_or("401")?;
    assert_eq!(code, 401);
    // ...one requested without audiences is: it is for the API server's, and the request
    // runs as the ServiceAccount (RBAC: it may review itself, nothing more).
    let api_token = token_of(&bed.request(&token_request(&[], None, None)).await?)?;
    let (_, claims) = decode_jwt(&api_token)?;
    assert_eq!(claims["aud"], json!([API_AUDIENCE]));
    assert_eq!(
        claims["exp"]
            .as_i64()
            .zip(claims["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(3600)
    );
    assert!(claims["kubernetes.io"].get("pod").is_none());
    let client = bed.bearer(&api_token).await?;
    let whoami = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let me = whoami.status.and_then(|s| s.user_info).ok_or("user info")?;
    assert_eq!(
        me.username.as_deref(),
        Some("system:serviceaccount:apps:app")
    );
    assert_eq!(me.uid.as_deref(), Some(sa_uid.as_str()));
    let jti = claims["jti"].as_str().ok_or("jti")?;
    assert_eq!(
        me.extra
            .and_then(|e| e.get("authentication.kubernetes.io/credential-id").cloned()),
        Some(vec![format!("JTI={jti}")])
    );
    let (code, _, message) =
        api_code(Api::<ServiceAccount>::namespaced(client, NS).get(SA).await).ok_or("403")?;
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains(
            "User \"system:serviceaccount:apps:app\" cannot get resource \"serviceaccounts\""
        ),
        "{message}"
    );
    bed.cluster.shutdown().await;
    Ok(())
}

/// `jwtTokenAuthenticator.AuthenticateToken`: the token's audiences must intersect those
/// asked for — `spec.audiences`, or the API server's when empty — else the authenticator's
/// "token audiences … is invalid for the target audiences …", after the bearer-token
/// authenticator's "invalid bearer token".
#[tokio::test]
async fn a_token_for_another_audience_is_refused() -> TestResult {
    let bed = Bed::start().await?;
    let token = token_of(&bed.request(&token_request(&["vault"], None, None)).await?)?;
    assert_eq!(
        bed.refusal(&token, &["other"]).await?,
        r#"[invalid bearer token, token audiences ["vault"] is invalid for the target audiences ["other"]]"#
    );
    assert_eq!(
        bed.refusal(&token, &[]).await?,
        format!(
            r#"[invalid bearer token, token audiences ["vault"] is invalid for the target audiences ["{API_AUDIENCE}"]]"#
        )
    );
    let status = bed.review(&token, &["vault"]).await?;
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    // A token with several audiences is good for each.
    let both = token_of(
        &bed.request(&token_request(&["vault", "other"], None, None))
            .await?,
    )?;
    assert_eq!(
        bed.review(&both, &["other"]).await?.audiences,
        Some(vec!["other".to_owned()])
    );
    bed.cluster.shutdown().await;
    Ok(())
}

/// `validator.Validate`'s time checks (`jwt.Claims.Validate` with `jwt.DefaultLeeway`): a
/// token is expired only a minute after its `exp`. On the token clock, moved with
/// `Objects::advance_token_clock`. `TokenREST.Create` shortens what exceeds
/// `--service-account-max-token-expiration` (48 h here) and gives the kubelet's 3607 s for
/// a pod a year with a `warnafter` claim (`--service-account-extend-token-expiration`).
#[tokio::test]
async fn tokens_expire_a_minute_after_their_exp_on_the_token_clock() -> TestResult {
    let bed = Bed::start().await?;
    let short = token_of(&bed.request(&token_request(&[], Some(600), None)).await?)?;
    let pod_uid = bed.uid_of(&bed.pods(), POD).await?;
    let projected = bed
        .request(&token_request(
            &[],
            Some(3607),
            Some(bound_to("Pod", "v1", POD, Some(&pod_uid))),
        ))
        .await?;
    let (_, claims) = decode_jwt(&token_of(&projected)?)?;
    let iat = claims["iat"].as_i64().ok_or("iat")?;
    assert_eq!(
        claims["exp"].as_i64(),
        Some(iat + 365 * 24 * 3600),
        "extended to a year"
    );
    assert_eq!(
        claims["kubernetes.io"]["warnafter"].as_i64(),
        Some(iat + 3607)
    );
    assert_eq!(projected.spec.expiration_seconds, Some(3607));
    let expires = projected
        .status
        .as_ref()
        .ok_or("status")?
        .expiration_timestamp
        .0
        .as_second();
    assert_eq!(
        expires,
        iat + 3607,
        "the expirationTimestamp is the one asked for"
    );
    let long = bed
        .request(&token_request(&[], Some(7 * 24 * 3600), None))
        .await?;
    assert_eq!(
        long.spec.expiration_seconds,
        Some(48 * 3600),
        "shortened to the maximum"
    );

    // At its exp, and until the leeway has passed, the token is good.
    bed.cluster
        .objects()
        .advance_token_clock(Duration::from_secs(600));
    assert_eq!(bed.review(&short, &[]).await?.authenticated, Some(true));
    bed.cluster
        .objects()
        .advance_token_clock(LEEWAY + Duration::from_secs(2));
    assert_eq!(
        bed.refusal(&short, &[]).await?,
        "[invalid bearer token, service account token has expired]"
    );
    let (code, _, _) = api_code(
        Api::<SelfSubjectReview>::all(bed.bearer(&short).await?)
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await,
    )
    .ok_or("an expired token is no credential")?;
    assert_eq!(code, 401);
    // Two hours on, the kubelet's projected token is still good; a year on, it is not.
    bed.cluster
        .objects()
        .advance_token_clock(Duration::from_secs(2 * 3600));
    assert_eq!(
        bed.review(&token_of(&projected)?, &[]).await?.authenticated,
        Some(true)
    );
    bed.cluster
        .objects()
        .advance_token_clock(Duration::from_secs(365 * 24 * 3600));
    assert_eq!(
        bed.refusal(&token_of(&projected)?, &[]).await?,
        "[invalid bearer token, service account token has expired]"
    );
    // A token issued now is issued at the moved time, and good.
    let fresh = token_of(&bed.request(&token_request(&[], None, None)).await?)?;
    assert_eq!(bed.review(&fresh, &[]).await?.authenticated, Some(true));
    bed.cluster.shutdown().await;
    Ok(())
}

/// `validator.Validate`'s pod checks: a token bound to a pod is "invalidated" once the pod
/// is gone, names the new uid when a pod of the same name replaced it, and is invalidated a
/// minute after a pod held by a finalizer was marked deleted.
#[tokio::test]
async fn a_deleted_pod_invalidates_its_tokens() -> TestResult {
    let bed = Bed::start().await?;
    let pod_ref = bound_to("Pod", "v1", POD, None);
    let token = token_of(
        &bed.request(&token_request(&[], None, Some(pod_ref.clone())))
            .await?,
    )?;
    let old_uid = bed.uid_of(&bed.pods(), POD).await?;
    assert_eq!(bed.review(&token, &[]).await?.authenticated, Some(true));
    bed.pods().delete(POD, &DeleteParams::default()).await?;
    assert_eq!(
        bed.refusal(&token, &[]).await?,
        "[invalid bearer token, service account token has been invalidated]"
    );
    // Binding to a pod that is gone is a 404.
    let (code, _, message) = api_code(
        bed.request(&token_request(&[], None, Some(pod_ref.clone())))
            .await,
    )
    .ok_or("404")?;
    assert_eq!((code, message.as_str()), (404, "pods \"web\" not found"));
    // The same name again is another pod.
    let mut held = pod(POD, Some(SA), Some(NODE));
    held.metadata.finalizers = Some(vec!["example.com/hold".to_owned()]);
    bed.pods().create(&PostParams::default(), &held).await?;
    let new_uid = bed.uid_of(&bed.pods(), POD).await?;
    assert_eq!(
        bed.refusal(&token, &[]).await?,
        format!(
            "[invalid bearer token, pod UID ({new_uid}) does not match service account pod ref claim ({old_uid})]"
        )
    );
    // A pod being deleted invalidates its tokens once the leeway has passed.
    let fresh = token_of(
        &bed.request(&token_request(&[], None, Some(pod_ref)))
            .await?,
    )?;
    bed.pods().delete(POD, &DeleteParams::default()).await?;
    let marked = bed.pods().get(POD).await?;
    assert!(
        marked.metadata.deletion_timestamp.is_some(),
        "held by its finalizer"
    );
    assert_eq!(bed.review(&fresh, &[]).await?.authenticated, Some(true));
    bed.cluster
        .objects()
        .advance_token_clock(LEEWAY + Duration::from_secs(2));
    assert_eq!(
        bed.refusal(&fresh, &[]).await?,
        "[invalid bearer token, service account token has been invalidated]"
    );
    bed.cluster.shutdown().await;
    Ok(())
}

/// `TokenREST.Create`'s bound object checks: a pod running as another ServiceAccount
/// cannot hold this one's token (400), a uid that is not the object's is a conflict (409),
/// only Pods, Secrets and Nodes of the core group can be bound (400); a Secret- or
/// Node-bound token is invalidated with its object (`validator.Validate`).
#[tokio::test]
async fn tokens_bind_only_to_existing_objects_of_their_service_account() -> TestResult {
    let bed = Bed::start().await?;
    bed.service_accounts()
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("other"),
                ..ServiceAccount::default()
            },
        )
        .await?;
    bed.pods()
        .create(
            &PostParams::default(),
            &pod("other-pod", Some("other"), None),
        )
        .await?;
    let (code, reason, message) = api_code(
        bed.request(&token_request(
            &[],
            None,
            Some(bound_to("Pod", "v1", "other-pod", None)),
        ))
        .await,
    )
    .ok_or("400")?;
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        message,
        "cannot bind token for serviceaccount \"app\" to pod running with different serviceaccount name."
    );
    let (code, reason, message) = api_code(
        bed.request(&token_request(
            &[],
            None,
            Some(bound_to("Pod", "v1", POD, Some("wrong"))),
        ))
        .await,
    )
    .ok_or("409")?;
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        message,
        "Operation cannot be fulfilled on Pod \"web\": the UID in the bound object reference (wrong) does not match the UID in record. The object might have been deleted and then recreated"
    );
    let (code, _, message) = api_code(
        bed.request(&token_request(
            &[],
            None,
            Some(bound_to("Deployment", "apps/v1", "d", None)),
        ))
        .await,
    )
    .ok_or("400")?;
    assert_eq!(
        (code, message.as_str()),
        (
            400,
            "cannot bind token to object of type apps/v1, Kind=Deployment"
        )
    );

    // Bound to a Secret: it carries the secret claim and dies with the Secret.
    let secrets: Api<Secret> = Api::namespaced(bed.admin.clone(), NS);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: meta("creds"),
                ..Secret::default()
            },
        )
        .await?;
    let secret_token = token_of(
        &bed.request(&token_request(
            &[],
            None,
            Some(bound_to("Secret", "v1", "creds", None)),
        ))
        .await?,
    )?;
    let (_, claims) = decode_jwt(&secret_token)?;
    assert_eq!(claims["kubernetes.io"]["secret"]["name"], "creds");
    assert_eq!(
        bed.review(&secret_token, &[]).await?.authenticated,
        Some(true)
    );
    secrets.delete("creds", &DeleteParams::default()).await?;
    assert_eq!(
        bed.refusal(&secret_token, &[]).await?,
        "[invalid bearer token, service account token has been invalidated]"
    );

    // Bound to the Node itself (ServiceAccountTokenNodeBinding): node extra, no pod.
    let node_token = token_of(
        &bed.request(&token_request(
            &[],
            None,
            Some(bound_to("Node", "v1", NODE, None)),
        ))
        .await?,
    )?;
    let user = bed.review(&node_token, &[]).await?.user.ok_or("user")?;
    let extra = user.extra.ok_or("extra")?;
    assert_eq!(
        extra.get("authentication.kubernetes.io/node-name"),
        Some(&vec![NODE.to_owned()])
    );
    assert!(!extra.contains_key("authentication.kubernetes.io/pod-name"));
    Api::<Node>::all(bed.admin.clone())
        .delete(NODE, &DeleteParams::default())
        .await?;
    assert_eq!(
        bed.refusal(&node_token, &[]).await?,
        "[invalid bearer token, service account token has been invalidated]"
    );
    // A pod on a node that does not exist (any more) still names it, without a uid.
    let (_, claims) = decode_jwt(&token_of(
        &bed.request(&token_request(
            &[],
            None,
            Some(bound_to("Pod", "v1", POD, None)),
        ))
        .await?,
    )?)?;
    assert_eq!(claims["kubernetes.io"]["node"], json!({"name": NODE}));
    bed.cluster.shutdown().await;
    Ok(())
}

/// `validator.Validate`'s ServiceAccount checks: a token outlives neither its
/// ServiceAccount nor its uid — deleted, the getter's NotFound; recreated, "service account
/// UID (…) does not match claim (…)". `TokenREST.Create` needs the ServiceAccount (404).
#[tokio::test]
async fn a_recreated_service_account_invalidates_its_tokens() -> TestResult {
    let bed = Bed::start().await?;
    let old_uid = bed.uid_of(&bed.service_accounts(), SA).await?;
    let token = token_of(&bed.request(&token_request(&[], None, None)).await?)?;
    bed.service_accounts()
        .delete(SA, &DeleteParams::default())
        .await?;
    assert_eq!(
        bed.refusal(&token, &[]).await?,
        "[invalid bearer token, serviceaccounts \"app\" not found]"
    );
    let (code, _, message) =
        api_code(bed.request(&token_request(&[], None, None)).await).ok_or("404")?;
    assert_eq!(
        (code, message.as_str()),
        (404, "serviceaccounts \"app\" not found")
    );
    bed.service_accounts()
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta(SA),
                ..ServiceAccount::default()
            },
        )
        .await?;
    let new_uid = bed.uid_of(&bed.service_accounts(), SA).await?;
    assert_ne!(new_uid, old_uid);
    assert_eq!(
        bed.refusal(&token, &[]).await?,
        format!(
            "[invalid bearer token, service account UID ({new_uid}) does not match claim ({old_uid})]"
        )
    );
    let (code, _, _) = api_code(
        Api::<SelfSubjectReview>::all(bed.bearer(&token).await?)
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await,
    )
    .ok_or("401")?;
    assert_eq!(code, 401);
    bed.cluster.shutdown().await;
    Ok(())
}

/// `ValidateTokenRequest`: `spec.expirationSeconds` of less than 10 minutes or more than
/// 2^32 s is 422 Invalid for `TokenRequest.authentication.k8s.io ""`; `TokenREST.Create`
/// wants the body's name, if any, to be the ServiceAccount's.
#[tokio::test]
async fn expiration_below_ten_minutes_is_invalid() -> TestResult {
    let bed = Bed::start().await?;
    let (code, reason, message) =
        api_code(bed.request(&token_request(&[], Some(599), None)).await).ok_or("422")?;
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        message,
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
    );
    let (code, _, message) = api_code(
        bed.request(&token_request(&[], Some((1 << 32) + 1), None))
            .await,
    )
    .ok_or("422")?;
    assert_eq!(code, 422);
    assert!(
        message.ends_with("may not specify a duration larger than 2^32 seconds"),
        "{message}"
    );
    let mut named = token_request(&[], None, None);
    named.metadata.name = Some("someone-else".to_owned());
    let (code, _, message) = api_code(bed.request(&named).await).ok_or("422")?;
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "TokenRequest.authentication.k8s.io \"app\" is invalid: metadata.name: Invalid value: \"someone-else\": must match the service account name if specified"
    );
    assert!(
        bed.request(&token_request(&[], Some(600), None))
            .await
            .is_ok()
    );
    bed.cluster.shutdown().await;
    Ok(())
}

/// RBAC on the two endpoints: a token request is `create` on `serviceaccounts` subresource
/// `token` (a grant on `serviceaccounts` itself is not enough), a review is `create` on
/// `tokenreviews` in `authentication.k8s.io` (which the bootstrap `system:auth-delegator`
/// ClusterRole grants).
#[tokio::test]
async fn rbac_guards_token_requests_and_reviews() -> TestResult {
    let bed = Bed::start().await?;
    bed.cluster.load_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: sa-admin, namespace: apps}
rules:
- {apiGroups: [""], resources: [serviceaccounts], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: sa-admin, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: sa-admin}
subjects: [{kind: User, name: bob}]
"#,
    )?;
    let bob = bed.cluster.client(&bed.cluster.user("bob", &[])?).await?;
    let token = token_of(&bed.request(&token_request(&[], None, None)).await?)?;
    let bob_sas: Api<ServiceAccount> = Api::namespaced(bob.clone(), NS);
    bob_sas.get(SA).await?;
    let (code, reason, message) = api_code(
        bob_sas
            .create_token_request(SA, &PostParams::default(), &token_request(&[], None, None))
            .await,
    )
    .ok_or("403")?;
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        "serviceaccounts \"app\" is forbidden: User \"bob\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"apps\""
    );
    let review = TokenReview {
        metadata: ObjectMeta::default(),
        spec: TokenReviewSpec {
            token: Some(token.clone()),
            audiences: None,
        },
        status: None,
    };
    let bob_reviews: Api<TokenReview> = Api::all(bob.clone());
    let (code, _, message) =
        api_code(bob_reviews.create(&PostParams::default(), &review).await).ok_or("403")?;
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "tokenreviews.authentication.k8s.io is forbidden: User \"bob\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"
    );

    bed.cluster.load_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: token-maker, namespace: apps}
rules:
- {apiGroups: [""], resources: [serviceaccounts/token], resourceNames: [app], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: token-maker, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: token-maker}
subjects: [{kind: User, name: bob}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: bob-delegator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects: [{kind: User, name: bob}]
"#,
    )?;
    let made = bob_sas
        .create_token_request(SA, &PostParams::default(), &token_request(&[], None, None))
        .await?;
    let reviewed = bob_reviews.create(&PostParams::default(), &review).await?;
    assert_eq!(reviewed.status.and_then(|s| s.authenticated), Some(true));
    let (_, claims) = decode_jwt(&token_of(&made)?)?;
    assert_eq!(claims["sub"], "system:serviceaccount:apps:app");
    bed.cluster.shutdown().await;
    Ok(())
}

/// `jwtTokenAuthenticator.AuthenticateToken`: a token whose payload was changed fails the
/// signature (go-jose's "error in cryptographic primitive"), a token with another key's id
/// finds no key, one from another issuer or no JWT at all is not the ServiceAccount
/// authenticator's and just an "invalid bearer token"; none is a request credential.
#[tokio::test]
async fn a_tampered_token_is_refused() -> TestResult {
    let bed = Bed::start().await?;
    let token = token_of(&bed.request(&token_request(&[], None, None)).await?)?;
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (header, mut claims) = decode_jwt(&token)?;
    claims["sub"] = json!("system:serviceaccount:kube-system:admin");
    claims["kubernetes.io"]["namespace"] = json!("kube-system");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        bed.refusal(&forged, &[]).await?,
        "[invalid bearer token, go-jose/go-jose: error in cryptographic primitive]"
    );
    // The last character of the 86 that encode a 64-byte ES256 signature carries four
    // unused bits, which Go's base64 decoding (as go-jose uses it) ignores: changing only
    // them changes no signature bit, and the token still verifies.
    let last = parts[2].chars().last().ok_or("signature")?;
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).ok_or("base64url")?;
    let sibling = alphabet.chars().nth(index ^ 1).ok_or("base64url")?;
    let same = format!(
        "{}.{}.{}{sibling}",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 1]
    );
    assert_ne!(same, token);
    assert_eq!(bed.review(&same, &[]).await?.authenticated, Some(true));
    let mut signature = b64.decode(parts[2])?;
    signature[10] ^= 0x01;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64.encode(&signature));
    assert_eq!(
        bed.refusal(&flipped, &[]).await?,
        "[invalid bearer token, go-jose/go-jose: error in cryptographic primitive]"
    );
    // Signed by another cluster's key (same issuer, another key id).
    let other = Cluster::start(ClusterOptions::default()).await?;
    other.load_yaml(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {SA}, namespace: {NS}}}\n"
    ))?;
    let foreign = token_of(
        &Api::<ServiceAccount>::namespaced(other.client(&other.admin()?).await?, NS)
            .create_token_request(SA, &PostParams::default(), &token_request(&[], None, None))
            .await?,
    )?;
    assert_ne!(decode_jwt(&foreign)?.0["kid"], header["kid"]);
    assert_eq!(
        bed.refusal(&foreign, &[]).await?,
        "[invalid bearer token, invalid signature, no keys found]"
    );
    other.shutdown().await;
    // Another issuer's JWT, and no JWT at all.
    claims["iss"] = json!("https://issuer.example");
    let elsewhere = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(bed.refusal(&elsewhere, &[]).await?, "invalid bearer token");
    assert_eq!(bed.refusal("not-a-jwt", &[]).await?, "invalid bearer token");
    // An empty token is a bad request, not a review.
    let (code, _, message) = api_code(
        bed.reviews()
            .create(&PostParams::default(), &TokenReview::default())
            .await,
    )
    .ok_or("400")?;
    assert_eq!(
        (code, message.as_str()),
        (400, "token is required for TokenReview in authentication")
    );
    for bad in [&forged, &flipped, &foreign] {
        let (code, _, _) = api_code(
            Api::<SelfSubjectReview>::all(bed.bearer(bad).await?)
                .create(&PostParams::default(), &SelfSubjectReview::default())
                .await,
        )
        .ok_or("401")?;
        assert_eq!(code, 401);
    }
    bed.cluster.shutdown().await;
    Ok(())
}

/// `NodeAuthorizer.authorizeCreateToken` and NodeRestriction's `admitServiceAccount`: a
/// node may request a token only for a ServiceAccount a pod on it runs as, bound (with its
/// uid) to such a pod.
#[tokio::test]
async fn a_node_gets_tokens_only_for_its_own_pods() -> TestResult {
    let bed = Bed::start().await?;
    let pod_uid = bed.uid_of(&bed.pods(), POD).await?;
    let kubelet = bed.cluster.client(&bed.cluster.node(NODE)?).await?;
    let stranger = bed.cluster.client(&bed.cluster.node("node-2")?).await?;
    let bound = token_request(
        &[],
        Some(3607),
        Some(bound_to("Pod", "v1", POD, Some(&pod_uid))),
    );
    let issued = Api::<ServiceAccount>::namespaced(kubelet.clone(), NS)
        .create_token_request(SA, &PostParams::default(), &bound)
        .await?;
    let reviewed = bed.review(&token_of(&issued)?, &[]).await?;
    assert_eq!(reviewed.authenticated, Some(true), "{reviewed:?}");
    let (code, _, message) = api_code(
        Api::<ServiceAccount>::namespaced(stranger, NS)
            .create_token_request(SA, &PostParams::default(), &bound)
            .await,
    )
    .ok_or("403")?;
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains(
            "User \"system:node:node-2\" cannot create resource \"serviceaccounts/token\""
        ),
        "{message}"
    );
    let own = Api::<ServiceAccount>::namespaced(kubelet, NS);
    for (req, why) in [
        (
            token_request(&[], None, None),
            "node requested token not bound to a pod",
        ),
        (
            token_request(&[], None, Some(bound_to("Pod", "v1", POD, None))),
            "node requested token with a pod binding without a uid",
        ),
    ] {
        let (code, _, message) = api_code(
            own.create_token_request(SA, &PostParams::default(), &req)
                .await,
        )
        .ok_or("403")?;
        assert_eq!(
            (code, message),
            (403, format!("serviceaccounts \"app\" is forbidden: {why}"))
        );
    }
    bed.cluster.shutdown().await;
    Ok(())
}

/// Pods as the ServiceAccount admission plugin, `ValidatePodCreate`/`ValidatePodUpdate`
/// and `ToSelectableFields` have them: a pod runs as `default` unless it names a
/// ServiceAccount, which must exist; its spec (ServiceAccount and node included) cannot
/// change; it is selectable by `spec.nodeName`.
#[tokio::test]
async fn pods_run_as_an_existing_service_account_and_keep_it() -> TestResult {
    let bed = Bed::start().await?;
    let (code, _, message) = api_code(
        bed.pods()
            .create(&PostParams::default(), &pod("nobody", None, None))
            .await,
    )
    .ok_or("403")?;
    assert_eq!(
        (code, message.as_str()),
        (
            403,
            "pods \"nobody\" is forbidden: error looking up service account apps/default: serviceaccount \"default\" not found"
        )
    );
    bed.service_accounts()
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("default"),
                ..ServiceAccount::default()
            },
        )
        .await?;
    let created = bed
        .pods()
        .create(&PostParams::default(), &pod("nobody", None, Some("node-2")))
        .await?;
    let spec = created.spec.ok_or("spec")?;
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );

    let (code, _, message) = api_code(
        bed.pods()
            .patch(
                POD,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"serviceAccountName": "default"}})),
            )
            .await,
    )
    .ok_or("422")?;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("spec: Forbidden: pod updates may not change fields other than"),
        "{message}"
    );
    bed.pods()
        .patch(
            POD,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "main", "image": "registry.invalid/app:2.0"}]}})),
        )
        .await?;

    let on_node = bed
        .pods()
        .list(&ListParams::default().fields(&format!("spec.nodeName={NODE}")))
        .await?;
    let names: Vec<String> = on_node
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, [POD]);
    let (code, _, _) = api_code(
        bed.pods()
            .list(&ListParams::default().fields("spec.bogus=x"))
            .await,
    )
    .ok_or("400")?;
    assert_eq!(code, 400);
    let (code, _, message) = api_code(
        bed.pods()
            .create(
                &PostParams::default(),
                &Pod {
                    metadata: meta("empty"),
                    spec: Some(PodSpec::default()),
                    status: None,
                },
            )
            .await,
    )
    .ok_or("422")?;
    assert_eq!(
        (code, message.as_str()),
        (
            422,
            "Pod \"empty\" is invalid: spec.containers: Required value"
        )
    );
    bed.cluster.shutdown().await;
    Ok(())
}

/// `/usr/bin/kubectl` against the same: `kubectl create serviceaccount` and `kubectl create
/// token` send protobuf (a ServiceAccount; a TokenRequest to `TokenREST.Create`, where
/// `ValidateTokenRequest` refuses `--duration 5m`), and the token it
/// prints reviews as the pod's ServiceAccount; `kubectl get pods` and `kubectl get sa` print
/// the columns of `printPod` and `printServiceAccount`, `--field-selector spec.nodeName`
/// selects (`ToSelectableFields`), and discovery lists pods, `serviceaccounts/token` and
/// tokenreviews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_bound_tokens_and_lists_pods() -> TestResult {
    let Some((c, dir, admin)) = crate::kubectl::cluster_with_admin().await? else {
        return Ok(());
    };
    let kubectl = |args: &[&str]| crate::kubectl::kubectl(&admin, args);
    let manifest = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Node
metadata: {{name: {NODE}}}
"#
    );
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, manifest)?;
    let created = kubectl(&["create", "-f", &file.to_string_lossy()])?;
    assert!(created.ok, "create: {}", created.stderr);
    // A protobuf ServiceAccount, then the pod that runs as it.
    let sa = kubectl(&["create", "serviceaccount", SA, "-n", NS])?;
    assert!(sa.ok, "create serviceaccount: {}", sa.stderr);
    assert_eq!(sa.stdout.trim(), "serviceaccount/app created");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {POD}, namespace: {NS}}}
spec:
  serviceAccountName: {SA}
  nodeName: {NODE}
  containers: [{{name: main, image: "registry.invalid/app:1.0"}}]
"#
    );
    let file = dir.path().join("pod.yaml");
    std::fs::write(&file, manifest)?;
    let created = kubectl(&["create", "-f", &file.to_string_lossy()])?;
    assert!(created.ok, "create: {}", created.stderr);
    assert!(
        created.stdout.contains("pod/web created"),
        "{}",
        created.stdout
    );

    let issued = kubectl(&[
        "create",
        "token",
        SA,
        "-n",
        NS,
        "--audience",
        "vault",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        POD,
        "--duration",
        "20m",
    ])?;
    assert!(issued.ok, "create token: {}", issued.stderr);
    let token = issued.stdout.trim();
    let (_, claims) = decode_jwt(token)?;
    let lifetime = claims["exp"]
        .as_i64()
        .zip(claims["iat"].as_i64())
        .map(|(e, i)| e - i);
    assert_eq!(lifetime, Some(1200));
    assert_eq!(claims["aud"], json!(["vault"]));
    let reviews: Api<TokenReview> = Api::all(c.client(&c.admin()?).await?);
    let review = TokenReview {
        metadata: ObjectMeta::default(),
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec!["vault".to_owned()]),
        },
        status: None,
    };
    let status = reviews
        .create(&PostParams::default(), &review)
        .await?
        .status
        .ok_or("status")?;
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let extra = status.user.and_then(|u| u.extra).ok_or("extra")?;
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec![POD.to_owned()])
    );
    let short = kubectl(&["create", "token", SA, "-n", NS, "--duration", "5m"])?;
    assert!(!short.ok);
    assert!(
        short
            .stderr
            .contains("spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"),
        "{}",
        short.stderr
    );

    let pods = kubectl(&["get", "pods", "-n", NS])?;
    assert!(pods.ok, "{}", pods.stderr);
    let rows: Vec<Vec<&str>> = pods
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(rows[1][..4], [POD, "0/1", "Pending", "0"]);
    let wide = kubectl(&[
        "get",
        "po",
        "-A",
        "-o",
        "wide",
        "--field-selector",
        &format!("spec.nodeName={NODE}"),
    ])?;
    assert!(wide.ok, "{}", wide.stderr);
    let row: Vec<&str> = wide
        .stdout
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!((row[0], row[1], row[7]), (NS, POD, NODE), "{}", wide.stdout);
    let elsewhere = kubectl(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "spec.nodeName=node-2",
    ])?;
    assert!(elsewhere.ok, "{}", elsewhere.stderr);
    assert!(
        elsewhere.stderr.contains("No resources found"),
        "{}",
        elsewhere.stderr
    );

    let sas = kubectl(&["get", "sa", "-n", NS])?;
    assert!(sas.ok, "{}", sas.stderr);
    let rows: Vec<Vec<&str>> = sas
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "SECRETS", "AGE"]);
    assert_eq!(rows[1][..2], [SA, "0"]);

    let resources = kubectl(&["api-resources", "--no-headers"])?;
    assert!(resources.ok, "{}", resources.stderr);
    let has = |name: &str, rest: &[&str]| {
        resources.stdout.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&name) && rest.iter().all(|r| cols.contains(r))
        })
    };
    assert!(
        has("pods", &["po", "v1", "true", "Pod"]),
        "{}",
        resources.stdout
    );
    assert!(
        has(
            "tokenreviews",
            &["authentication.k8s.io/v1", "false", "TokenReview"]
        ),
        "{}",
        resources.stdout
    );
    let can = kubectl(&[
        "auth",
        "can-i",
        "create",
        "serviceaccounts",
        "--subresource=token",
        "-n",
        NS,
    ])?;
    assert_eq!(can.stdout.trim(), "yes", "{}", can.stderr);
    c.shutdown().await;
    Ok(())
}
