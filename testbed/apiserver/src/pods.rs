//! Pods, minimally: what a bound ServiceAccount token needs of them and what `kubectl get
//! pods` shows. Stored as kube-apiserver stores them — the v1 defaults
//! (`SetDefaults_PodSpec`, `SetDefaults_Container`), the ServiceAccount admission plugin's
//! `Admit` (default ServiceAccount, which must exist; image pull secrets), the status
//! `PodStrategy.PrepareForCreate` sets (`Pending`, the QoS class) and the parts of
//! `ValidatePodCreate` and `ValidatePodUpdate` that keep a pod's identity fixed (containers
//! named and with images; a pod's spec, its ServiceAccount and node included, immutable).
//! Nothing runs them: no scheduler, no kubelet, no token volume. Deletion is immediate
//! unless finalizers hold the pod, as for every kind here.

use serde_json::{Map, Value, json};

use super::State;
use super::object::{DNS_LABEL_MESSAGE, is_dns_label};
use super::resources::{ids, kind};
use super::status::{ApiError, Cause};
use super::store::ObjectKey;

/// The ServiceAccount a pod runs as when it names none (`DefaultServiceAccountName`).
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The fields `ValidatePodUpdate` lets an update change (`updatablePodSpecFields`, 1.32).
const UPDATABLE_POD_SPEC_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn object_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.to_owned(), json!({}));
    }
    m.get_mut(key).and_then(Value::as_object_mut)
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    let unset = match m.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    if unset {
        m.insert(key.to_owned(), value);
    }
}

/// `SetDefaults_Container`'s pull policy: `Always` for `:latest` or an untagged image,
/// `IfNotPresent` for a tag or a digest.
fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

/// `v1.Convert_v1_PodSpec_To_core_PodSpec` and back: `serviceAccount` is the deprecated
/// alias of `serviceAccountName`, read when the latter is empty and always written back.
fn sync_service_account_alias(spec: &mut Map<String, Value>) {
    let name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| spec.get("serviceAccount").and_then(Value::as_str))
        .unwrap_or("")
        .to_owned();
    if name.is_empty() {
        spec.remove("serviceAccountName");
        spec.remove("serviceAccount");
    } else {
        spec.insert("serviceAccountName".into(), json!(name));
        spec.insert("serviceAccount".into(), json!(name));
    }
}

/// The QoS class (`qos.GetPodQOS`), comparing quantities as written: `BestEffort` without
/// any CPU or memory request or limit, `Guaranteed` when every container limits both and
/// requests what it limits, `Burstable` otherwise.
fn qos_class(spec: &Map<String, Value>) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let amount = |c: &Value, which: &str, res: &str| {
        c.pointer(&format!("/resources/{which}/{res}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let any = containers.iter().any(|c| {
        ["requests", "limits"]
            .iter()
            .any(|w| ["cpu", "memory"].iter().any(|r| amount(c, w, r).is_some()))
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = amount(c, "limits", r);
            let request = amount(c, "requests", r);
            limit.is_some() && (request.is_none() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Defaults of a new pod: `SetDefaults_PodSpec` (restart and DNS policy, scheduler, grace
/// period, security context, service links), `SetDefaults_Container` (termination message,
/// pull policy, port protocol), and the status `PodStrategy.PrepareForCreate` sets
/// (`phase: Pending` and the QoS class; whatever status the client sent is dropped).
pub fn prepare_create(obj: &mut Value) {
    let Some(spec) = object_mut(obj, "spec") else {
        return;
    };
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    sync_service_account_alias(spec);
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else {
                continue;
            };
            let image = c
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            set_default(c, "imagePullPolicy", json!(image_pull_policy(&image)));
            set_default(c, "resources", json!({}));
            for port in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                set_default(port, "protocol", json!("TCP"));
            }
        }
    }
    let qos = qos_class(spec);
    if let Some(m) = obj.as_object_mut() {
        m.insert(
            "status".into(),
            json!({"phase": "Pending", "qosClass": qos}),
        );
    }
}

/// The ServiceAccount admission plugin's `Admit` on a pod create: a pod without a
/// ServiceAccount runs as [`DEFAULT_SERVICE_ACCOUNT`]; the ServiceAccount must exist (403
/// "error looking up service account NS/NAME: …" otherwise — the testbed runs no
/// ServiceAccount controller, so not even `default` exists until someone creates it); a pod
/// without image pull secrets gets the ServiceAccount's. The token volume the plugin also
/// mounts is not added (nothing would read it). Skipped when the namespace does not exist,
/// which the create then answers with 404.
pub fn admit_service_account(
    state: &State,
    obj: &mut Value,
    namespace: &str,
    pod: &str,
) -> Result<(), ApiError> {
    if state
        .store
        .get(ids::namespaces(), &ObjectKey::new("", namespace))
        .is_none()
    {
        return Ok(());
    }
    let Some(spec) = object_mut(obj, "spec") else {
        return Ok(());
    };
    sync_service_account_alias(spec);
    let name = match spec.get("serviceAccountName").and_then(Value::as_str) {
        Some(n) => n.to_owned(),
        None => {
            spec.insert("serviceAccountName".into(), json!(DEFAULT_SERVICE_ACCOUNT));
            spec.insert("serviceAccount".into(), json!(DEFAULT_SERVICE_ACCOUNT));
            DEFAULT_SERVICE_ACCOUNT.to_owned()
        }
    };
    let Some(sa) = state
        .store
        .get(ids::service_accounts(), &ObjectKey::new(namespace, &name))
    else {
        return Err(ApiError::forbidden(
            kind(ids::pods()),
            pod,
            &format!(
                "error looking up service account {namespace}/{name}: serviceaccount {name:?} not found"
            ),
        ));
    };
    let no_pull_secrets = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_pull_secrets {
        let secrets: Vec<Value> = sa
            .value()?
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("name").and_then(Value::as_str))
            .map(|n| json!({"name": n}))
            .collect();
        if !secrets.is_empty() {
            spec.insert("imagePullSecrets".into(), Value::Array(secrets));
        }
    }
    Ok(())
}

/// What `ValidatePodCreate` checks of a pod's identity (`validateContainers`): at least one
/// container; every container and init container named with a DNS label, no name twice;
/// every container with an image.
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let containers = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if containers.is_empty() {
        causes.push(Cause::required("spec.containers", ""));
    }
    let mut seen: Vec<&str> = Vec::new();
    for list in ["initContainers", "containers"] {
        let items = obj
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, c) in items.iter().enumerate() {
            let path = format!("spec.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                causes.push(Cause::required(format!("{path}.name"), ""));
            } else if !is_dns_label(name) {
                causes.push(Cause::invalid(
                    format!("{path}.name"),
                    &format!("{name:?}"),
                    DNS_LABEL_MESSAGE,
                ));
            } else if seen.contains(&name) {
                causes.push(Cause::duplicate(
                    format!("{path}.name"),
                    &format!("{name:?}"),
                ));
            } else {
                seen.push(name);
            }
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::required(format!("{path}.image"), ""));
            }
        }
    }
    causes
}

/// `ValidatePodUpdate` for the spec: only `updatablePodSpecFields` may change (container
/// images, `activeDeadlineSeconds`, added tolerations, a negative grace period set to 1);
/// anything else — the ServiceAccount and the node a bound token names among it — is 422
/// "Forbidden: pod updates may not change fields other than …" (kube-apiserver appends a
/// diff of the specs, left out here). The deprecated `serviceAccount` alias is kept in step.
pub fn validate_update(new: &mut Value, old: &Value) -> Vec<Cause> {
    if let Some(spec) = object_mut(new, "spec") {
        sync_service_account_alias(spec);
    }
    let mut causes = validate(new);
    let munged = |spec: &Value, keep_from: &Value| {
        let mut s = spec.clone();
        for list in ["containers", "initContainers"] {
            let images: Vec<Value> = keep_from
                .get(list)
                .and_then(Value::as_array)
                .map(|cs| cs.iter().map(|c| c["image"].clone()).collect())
                .unwrap_or_default();
            if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                for (c, image) in cs.iter_mut().zip(images) {
                    c["image"] = image;
                }
            }
        }
        if let Some(m) = s.as_object_mut() {
            m.remove("activeDeadlineSeconds");
            m.remove("terminationGracePeriodSeconds");
            m.remove("tolerations");
        }
        s
    };
    let old_spec = old.get("spec").cloned().unwrap_or(json!({}));
    let new_spec = new.get("spec").cloned().unwrap_or(json!({}));
    let tolerations = |s: &Value| -> Vec<Value> {
        s.get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let removed_toleration = tolerations(&old_spec)
        .iter()
        .any(|t| !tolerations(&new_spec).contains(t));
    let grace = |s: &Value| {
        s.get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
    };
    let grace_ok = grace(&old_spec) == grace(&new_spec)
        || (grace(&old_spec).is_some_and(|g| g < 0) && grace(&new_spec) == Some(1));
    if munged(&new_spec, &old_spec) != munged(&old_spec, &old_spec)
        || removed_toleration
        || !grace_ok
    {
        causes.push(Cause::forbidden(
            "spec",
            &format!("pod updates may not change fields other than {UPDATABLE_POD_SPEC_FIELDS}"),
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_as_set_defaults_pod_spec() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "nginx"},
            {"name": "b", "image": "registry:5000/app:1.2", "ports": [{"containerPort": 80}],
             "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Running"}});
        prepare_create(&mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][1]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "Burstable"})
        );
        assert_eq!(image_pull_policy("app@sha256:00"), "IfNotPresent");
        assert_eq!(image_pull_policy("app:latest"), "Always");
    }

    #[test]
    fn containers_are_named_once_and_have_images() {
        let causes = validate(&json!({"spec": {"containers": [
            {"name": "a", "image": "x"}, {"name": "a", "image": "x"}, {"name": "B"}]}}));
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[1].name",
                "spec.containers[2].name",
                "spec.containers[2].image"
            ]
        );
        assert_eq!(validate(&json!({"spec": {}}))[0].message, "Required value");
    }

    #[test]
    fn only_images_and_added_tolerations_may_change() {
        let old = json!({"spec": {"serviceAccountName": "a", "serviceAccount": "a",
            "containers": [{"name": "c", "image": "x:1"}], "tolerations": [{"key": "k"}]}});
        let mut image = old.clone();
        image["spec"]["containers"][0]["image"] = json!("x:2");
        image["spec"]["tolerations"] = json!([{"key": "k"}, {"key": "l"}]);
        assert!(validate_update(&mut image, &old).is_empty());
        let mut rebound = old.clone();
        rebound["spec"]["serviceAccountName"] = json!("b");
        let causes = validate_update(&mut rebound, &old);
        assert_eq!(causes.len(), 1);
        assert!(
            causes[0]
                .message
                .starts_with("Forbidden: pod updates may not change")
        );
        assert_eq!(rebound["spec"]["serviceAccount"], "b", "alias follows");
        let mut dropped = old.clone();
        dropped["spec"]["tolerations"] = json!([]);
        assert_eq!(validate_update(&mut dropped, &old).len(), 1);
    }
}
