//! A strict layer in front of the in-memory Kubernetes API (kube-fake-client), holding
//! sluice to what a real API server enforces and the fake does not:
//!
//! - RBAC: each client acts as a service account of manifests/ and may make only the calls
//!   its Role there grants (403 otherwise, and the call is recorded as denied);
//! - names: a Job must be a DNS-1123 label of at most 63 characters, and an Indexed Job's
//!   pod hostname `<job>-<highest index>` too; a CronJob at most 52; label values at most 63
//!   (422 otherwise);
//! - lifecycle: objects get a `metadata.uid`; deleting a Job garbage-collects the objects
//!   whose ownerReferences all point at deleted owners (ConfigMaps, pods); a finished Job
//!   with `ttlSecondsAfterFinished` is deleted once that time has passed on the layer's
//!   clock, which tests move forward with [`StrictApi::advance`].
//!
//! The Job controller's pod labels (`batch.kubernetes.io/job-name`,
//! `batch.kubernetes.io/job-completion-index`) are set by support/controller.rs, which
//! plays the controller through an unrestricted client.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kube::client::Body;
use serde_json::Value;

/// One API call as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub account: String,
    pub verb: String,
    pub group: String,
    /// `pods`, or `pods/log` for a subresource.
    pub resource: String,
    pub name: Option<String>,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(
            f,
            "{} {} {group}/{} {}",
            self.account,
            self.verb,
            self.resource,
            self.name.as_deref().unwrap_or("")
        )
    }
}

#[derive(Debug, Clone)]
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

impl Rule {
    fn allows(&self, call: &Call) -> bool {
        let any = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        any(&self.groups, &call.group)
            && any(&self.resources, &call.resource)
            && any(&self.verbs, &call.verb)
            && (self.names.is_empty() || call.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }
}

/// The Roles of manifests/, by the service account bound to them.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    rules: BTreeMap<String, Vec<Rule>>,
}

impl Rbac {
    /// Reads every Role and RoleBinding of manifests/.
    pub fn from_manifests() -> Rbac {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
        let mut roles: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
        let mut bindings: Vec<(String, String)> = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
                let strings = |v: &Value| -> Vec<String> {
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                };
                match doc["kind"].as_str() {
                    Some("Role") => {
                        let rules = doc["rules"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| Rule {
                                groups: strings(&r["apiGroups"]),
                                resources: strings(&r["resources"]),
                                verbs: strings(&r["verbs"]),
                                names: strings(&r["resourceNames"]),
                            })
                            .collect();
                        roles.insert(doc["metadata"]["name"].as_str().unwrap().into(), rules);
                    }
                    Some("RoleBinding") => {
                        let role = doc["roleRef"]["name"].as_str().unwrap().to_string();
                        for subject in doc["subjects"].as_array().unwrap() {
                            if subject["kind"] == "ServiceAccount" {
                                let name = subject["name"].as_str().unwrap().to_string();
                                bindings.push((name, role.clone()));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut rules: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
        for (account, role) in bindings {
            let granted = roles.get(&role).cloned().unwrap_or_default();
            rules.entry(account).or_default().extend(granted);
        }
        Rbac { rules }
    }

    pub fn allows(&self, call: &Call) -> bool {
        self.rules
            .get(&call.account)
            .is_some_and(|rules| rules.iter().any(|r| r.allows(call)))
    }

    /// The service accounts that have a Role.
    pub fn accounts(&self) -> Vec<String> {
        self.rules.keys().cloned().collect()
    }
}

/// What the layer remembers between requests.
#[derive(Default)]
struct State {
    calls: Vec<(Call, bool)>,
    /// When each finished Job (by namespace and name) was first seen finished, on the
    /// layer's clock.
    finished: BTreeMap<(String, String), Duration>,
    /// How far tests moved the clock on.
    advanced: Duration,
}

/// The strict API: one in-memory store, clients acting as service accounts.
#[derive(Clone)]
pub struct StrictApi {
    inner: kube::Client,
    lock: Arc<tokio::sync::Mutex<()>>,
    state: Arc<Mutex<State>>,
    rbac: Arc<Rbac>,
    started: Instant,
}

impl StrictApi {
    pub async fn new() -> StrictApi {
        let inner = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .expect("an in-memory API");
        StrictApi {
            inner,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            state: Arc::new(Mutex::new(State::default())),
            rbac: Arc::new(Rbac::from_manifests()),
            started: Instant::now(),
        }
    }

    /// A client acting as `account` (a service account of manifests/), or, with `None`, as
    /// the cluster's own controllers and an administrator (no RBAC check).
    pub fn client_as(&self, account: Option<&str>) -> kube::Client {
        let api = self.clone();
        let account = account.map(String::from);
        let service = tower::service_fn(move |request: hyper::Request<Body>| {
            let (api, account) = (api.clone(), account.clone());
            async move { api.handle(account.as_deref(), request).await }
        });
        kube::Client::new(service, "default")
    }

    /// Every call made by a service account, and whether it was granted.
    pub fn calls(&self) -> Vec<(Call, bool)> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The calls that RBAC refused.
    pub fn denied(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|(_, granted)| !granted)
            .map(|(c, _)| c.to_string())
            .collect()
    }

    /// Moves the layer's clock on (for `ttlSecondsAfterFinished`) and applies the TTLs.
    pub async fn advance(&self, by: Duration) {
        self.state.lock().unwrap().advanced += by;
        let _one_at_a_time = self.lock.lock().await;
        self.expire_finished_jobs().await;
    }

    fn now(&self) -> Duration {
        self.started.elapsed() + self.state.lock().unwrap().advanced
    }

    async fn handle(
        &self,
        account: Option<&str>,
        request: hyper::Request<Body>,
    ) -> Result<hyper::Response<Body>, kube::Error> {
        let _one_at_a_time = self.lock.lock().await;
        self.expire_finished_jobs().await;
        let (parts, body) = request.into_parts();
        let call = call_of(&parts.method, &parts.uri, account.unwrap_or(""));
        if let Some(account) = account {
            let granted = self.rbac.allows(&call);
            self.state
                .lock()
                .unwrap()
                .calls
                .push((call.clone(), granted));
            if !granted {
                return Ok(status(
                    403,
                    "Forbidden",
                    &format!(
                        "system:serviceaccount:sluice:{account} cannot {} resource {:?} in API group {:?}",
                        call.verb, call.resource, call.group
                    ),
                ));
            }
        }
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut bytes = bytes.to_vec();
        if call.verb == "create" && !bytes.is_empty() {
            let mut object: Value = serde_json::from_slice(&bytes).unwrap();
            if let Err(why) = check_names(&object) {
                return Ok(status(422, "Invalid", &why));
            }
            static NEXT: AtomicU64 = AtomicU64::new(1);
            let uid = format!("uid-{}", NEXT.fetch_add(1, Ordering::Relaxed));
            object["metadata"]["uid"] = Value::String(uid);
            bytes = serde_json::to_vec(&object).unwrap();
        }
        let request = hyper::Request::from_parts(parts, Body::from(bytes));
        let response = self.inner.send(request).await?;
        if call.verb == "delete" && call.resource == "jobs" && response.status().is_success() {
            self.collect_garbage().await;
        }
        Ok(response)
    }

    /// Deletes the finished Jobs whose `ttlSecondsAfterFinished` has passed, as the TTL
    /// controller does, and what they owned.
    async fn expire_finished_jobs(&self) {
        let jobs: Api<KubeJob> = Api::all(self.inner.clone());
        let Ok(list) = jobs.list(&ListParams::default()).await else {
            return;
        };
        let now = self.now();
        let mut expired = Vec::new();
        for job in list.items {
            let finished = job
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed"));
            let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
            let (Some(ttl), true) = (ttl, finished) else {
                continue;
            };
            let key = (
                job.metadata.namespace.clone().unwrap_or_default(),
                job.metadata.name.clone().unwrap_or_default(),
            );
            let since = *self
                .state
                .lock()
                .unwrap()
                .finished
                .entry(key.clone())
                .or_insert(now);
            if now >= since + Duration::from_secs(ttl.max(0) as u64) {
                expired.push(key);
            }
        }
        if expired.is_empty() {
            return;
        }
        for (namespace, name) in expired {
            let api: Api<KubeJob> = Api::namespaced(self.inner.clone(), &namespace);
            let _ = api.delete(&name, &DeleteParams::default()).await;
            self.state
                .lock()
                .unwrap()
                .finished
                .remove(&(namespace, name));
        }
        self.collect_garbage().await;
    }

    /// Deletes ConfigMaps and pods whose owners are all gone, as the garbage collector does.
    async fn collect_garbage(&self) {
        let jobs: Api<KubeJob> = Api::all(self.inner.clone());
        let live: BTreeSet<String> = jobs
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|j| j.metadata.uid)
            .collect();
        let orphaned = |meta: &kube::api::ObjectMeta| {
            meta.owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty() && o.iter().all(|o| !live.contains(&o.uid)))
        };
        let maps: Api<ConfigMap> = Api::all(self.inner.clone());
        for map in maps
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            if orphaned(&map.metadata) {
                let api: Api<ConfigMap> = Api::namespaced(
                    self.inner.clone(),
                    map.metadata.namespace.as_deref().unwrap_or("default"),
                );
                let _ = api
                    .delete(
                        map.metadata.name.as_deref().unwrap(),
                        &DeleteParams::default(),
                    )
                    .await;
            }
        }
        let pods: Api<Pod> = Api::all(self.inner.clone());
        for pod in pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            if orphaned(&pod.metadata) {
                let api: Api<Pod> = Api::namespaced(
                    self.inner.clone(),
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                );
                let _ = api
                    .delete(
                        pod.metadata.name.as_deref().unwrap(),
                        &DeleteParams::default(),
                    )
                    .await;
            }
        }
    }
}

/// The RBAC view of a request: `/api/v1/namespaces/NS/pods/NAME/log`,
/// `/apis/GROUP/VERSION/namespaces/NS/RESOURCE[/NAME[/SUB]]`.
fn call_of(method: &hyper::Method, uri: &hyper::Uri, account: &str) -> Call {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => (String::new(), &segments[..0]),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, name, sub) = match rest {
        [resource] => (resource.to_string(), None, None),
        [resource, name] => (resource.to_string(), Some(name.to_string()), None),
        [resource, name, sub, ..] => (
            resource.to_string(),
            Some(name.to_string()),
            Some(sub.to_string()),
        ),
        [] => (String::new(), None, None),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"));
    let verb = match (method.as_str(), &name) {
        ("GET", None) if watch => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", None) => "deletecollection",
        ("DELETE", Some(_)) => "delete",
        _ => "unknown",
    };
    Call {
        account: account.to_string(),
        verb: verb.to_string(),
        group,
        resource: match sub {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        },
        name,
    }
}

/// The name checks of a real API server that sluice's names can run into.
fn check_names(object: &Value) -> Result<(), String> {
    let kind = object["kind"].as_str().unwrap_or("");
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    let labels = |v: &Value| -> Vec<(String, String)> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect()
    };
    let mut all_labels = labels(&object["metadata"]["labels"]);
    all_labels.extend(labels(&object["spec"]["template"]["metadata"]["labels"]));
    all_labels.extend(labels(
        &object["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
    ));
    for (key, value) in all_labels {
        if value.len() > 63 {
            return Err(format!(
                "{kind} {name:?} is invalid: label {key}: {value:?}: must be no more than 63 characters"
            ));
        }
    }
    match kind {
        "Job" => {
            if !is_dns_label(name) {
                return Err(format!(
                    "Job {name:?} is invalid: metadata.name: must be a DNS-1123 label of at most 63 characters (it becomes the job-name label of its pods)"
                ));
            }
            let spec = &object["spec"];
            if spec["completionMode"] == "Indexed" {
                let highest = spec["completions"].as_i64().unwrap_or(1) - 1;
                let hostname = format!("{name}-{highest}");
                if !is_dns_label(&hostname) {
                    return Err(format!(
                        "Job {name:?} is invalid: spec.template.spec.hostname: Invalid value: {hostname:?}: must be no more than 63 characters"
                    ));
                }
            }
        }
        "CronJob" => {
            if !is_dns_label(name) || name.len() > 52 {
                return Err(format!(
                    "CronJob {name:?} is invalid: metadata.name: must be no more than 52 characters"
                ));
            }
        }
        _ => {
            if name.is_empty() || name.len() > 253 {
                return Err(format!("{kind} {name:?} is invalid: metadata.name"));
            }
        }
    }
    Ok(())
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// An API error response as a real server sends it.
fn status(code: u16, reason: &str, message: &str) -> hyper::Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}
