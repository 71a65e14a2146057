//! A real Prometheus server watching the sandbox (`sandbox --prometheus`): it scrapes every
//! approver replica's admin `/metrics` and evaluates the Helm chart's alerting rules
//! (`deploy/helm/kubelet-rubber-stamp/files/alerts.yaml`) against them, and the sandbox
//! waits, through Prometheus's HTTP API, until the squatter's conflict fires
//! `RubberStampAddressConflict`.
//!
//! The server is the one Debian packages (`prometheus`, 2.42 on bookworm; `.ci/test-monitoring`
//! installs it in CI). It runs in the root namespace on `127.0.0.1`, port chosen by the
//! kernel, with its configuration, rules and storage under `<state>/prometheus/`, and is
//! killed with its process group when [`Prometheus`] is dropped.
//!
//! The rules are the chart's, with one change: every `for:` is `0s` ([`without_for`]), so an
//! alert fires at its first evaluation instead of after the minutes an operator's copy
//! waits. Everything else — expressions, windows, labels, annotations — is what a cluster
//! gets. Scrapes and evaluations run every second.
//!
//! How Prometheus reaches the admin port is [`Scrape`] (scheme, CA, server name, bearer
//! token file), made in one place, [`Scrape::for_sandbox`]: as the sandbox itself reads the
//! admin port — HTTPS, the approver's serving CA, the Service name, and the token of the
//! sandbox's observer ServiceAccount, bound to `rubber-stamp:metrics-reader` as an operator
//! binds Prometheus's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rubber_stamp_hosts::HostProcess;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::approver::tail;
use super::{Sandbox, SandboxError, control};

/// The chart's alerting rules, as built into this binary.
pub const RULES: &str = include_str!("../../../deploy/helm/kubelet-rubber-stamp/files/alerts.yaml");
/// Where [`RULES`] lives in the repository.
pub const RULES_PATH: &str = "deploy/helm/kubelet-rubber-stamp/files/alerts.yaml";
/// The alert the squatter fires.
pub const ADDRESS_CONFLICT: &str = "RubberStampAddressConflict";
/// Where Debian's `prometheus` package puts the server.
pub const DEBIAN_BINARY: &str = "/usr/bin/prometheus";
/// The scrape job of the approver replicas.
pub const JOB: &str = "rubber-stamp-approver";
/// How often Prometheus scrapes and evaluates.
const INTERVAL: &str = "1s";
/// How long the server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Polling interval of the waits.
const POLL: Duration = Duration::from_millis(100);

/// The Prometheus binary: `explicit` if given, else `prometheus` on `PATH`, else
/// [`DEBIAN_BINARY`] if it exists.
pub fn find_binary(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("prometheus"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from(DEBIAN_BINARY);
        debian.is_file().then_some(debian)
    })
}

/// The scheme of the admin port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTPS.
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// How Prometheus reaches an approver's admin `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scrape {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// A file holding the bearer token to send (`authorization: Bearer`).
    pub bearer_token_file: Option<PathBuf>,
    /// The CA bundle that verifies the admin port's certificate (HTTPS).
    pub ca_file: Option<PathBuf>,
    /// The name to verify the certificate for, when it is not the target's address.
    pub server_name: Option<String>,
}

impl Scrape {
    /// How the sandbox reads its replicas' admin ports (HTTPS, its CA, the name in the
    /// serving certificate, its observer's token), with the CA and the token written to
    /// `dir` for Prometheus to read.
    pub fn for_sandbox(sandbox: &Sandbox, dir: &Path) -> Result<Self, SandboxError> {
        let Some(client) = sandbox.approvers().first().map(|a| a.admin_client()) else {
            return Ok(Self::default());
        };
        let ca = dir.join("admin-ca.crt");
        write_private(&ca, &client.ca_pem)?;
        let token = match &client.token {
            Some(token) => {
                let path = dir.join("admin-token");
                write_private(&path, token)?;
                Some(path)
            }
            None => None,
        };
        Ok(Self {
            scheme: Scheme::Https,
            bearer_token_file: token,
            ca_file: Some(ca),
            server_name: Some(client.server_name.clone()),
        })
    }
}

/// Writes `text` to `path`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), SandboxError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|source| SandboxError::Io {
            path: path.to_owned(),
            source,
        })
}

/// One approver replica to scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The replica's name (the `pod` label, as the Prometheus Operator sets it).
    pub replica: String,
    /// Its admin address.
    pub admin: SocketAddr,
}

/// The replicas of `sandbox`.
pub fn targets(sandbox: &Sandbox) -> Vec<Target> {
    sandbox
        .approvers()
        .iter()
        .map(|a| Target {
            replica: a.name().to_owned(),
            admin: a.admin(),
        })
        .collect()
}

/// `prometheus.yml` (JSON, which is YAML): scrape every target's `/metrics` as `scrape`
/// says, labelled with `namespace` and the replica's name as `pod`, and evaluate
/// `rule_file`; both every second.
pub fn config(targets: &[Target], scrape: &Scrape, rule_file: &Path, namespace: &str) -> Value {
    let mut job = json!({
        "job_name": JOB,
        "scheme": scrape.scheme.as_str(),
        "metrics_path": "/metrics",
        "static_configs": targets
            .iter()
            .map(|t| json!({
                "targets": [t.admin.to_string()],
                "labels": { "namespace": namespace, "pod": t.replica },
            }))
            .collect::<Vec<_>>(),
    });
    if let Some(token) = &scrape.bearer_token_file {
        job["authorization"] = json!({ "type": "Bearer", "credentials_file": token });
    }
    let mut tls = serde_json::Map::new();
    if let Some(ca) = &scrape.ca_file {
        tls.insert("ca_file".into(), json!(ca));
    }
    if let Some(name) = &scrape.server_name {
        tls.insert("server_name".into(), json!(name));
    }
    if !tls.is_empty() {
        job["tls_config"] = Value::Object(tls);
    }
    json!({
        "global": {
            "scrape_interval": INTERVAL,
            "scrape_timeout": INTERVAL,
            "evaluation_interval": INTERVAL,
        },
        "rule_files": [rule_file],
        "scrape_configs": [job],
    })
}

/// `rules` with every `for:` set to `0s`: each alert fires at the first evaluation whose
/// expression holds. The rule file keeps each `for:` on a line of its own for this.
pub fn without_for(rules: &str) -> String {
    let mut out = String::with_capacity(rules.len());
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("for:") {
            out.push_str(&line[..line.len() - trimmed.len()]);
            out.push_str("for: 0s");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// A running Prometheus server.
#[derive(Debug)]
pub struct Prometheus {
    process: HostProcess,
    addr: SocketAddr,
    dir: PathBuf,
    targets: Vec<Target>,
}

impl Prometheus {
    /// Writes the configuration and the rules ([`without_for`] of [`RULES`]) to `dir`,
    /// starts `binary` on `127.0.0.1` (output in `log_dir`) and waits until it serves.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        log_dir: &Path,
        targets: Vec<Target>,
        scrape: &Scrape,
    ) -> Result<Self, SandboxError> {
        if !binary.is_file() {
            return Err(SandboxError::Setup(format!(
                "no Prometheus server at {} (Debian: apt-get install --no-install-recommends prometheus)",
                binary.display()
            )));
        }
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|source| SandboxError::Io { path, source })
        };
        std::fs::create_dir_all(dir).map_err(|source| SandboxError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let rules = dir.join("rules.yaml");
        write(rules.clone(), &without_for(RULES))?;
        let config_path = dir.join("prometheus.yml");
        let config = config(&targets, scrape, &rules, control::NAMESPACE);
        write(
            config_path.clone(),
            &serde_json::to_string_pretty(&config).unwrap_or_default(),
        )?;
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--log.format=logfmt");
        let mut process = HostProcess::spawn("prometheus", cmd, log_dir)?;
        let addr = wait_serving(&mut process).await?;
        Ok(Self {
            process,
            addr,
            dir: dir.to_owned(),
            targets,
        })
    }

    /// Its web UI and API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where its configuration, rules and storage are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The scrape targets as Prometheus sees them (`/api/v1/targets`).
    pub async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>, SandboxError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Targets {
            active_targets: Vec<ScrapeTarget>,
        }
        let targets: Targets = self.api("/api/v1/targets?state=active").await?;
        Ok(targets.active_targets)
    }

    /// Every rule group with its rules' states (`/api/v1/rules`).
    pub async fn rule_groups(&self) -> Result<Vec<RuleGroup>, SandboxError> {
        #[derive(Deserialize)]
        struct Groups {
            groups: Vec<RuleGroup>,
        }
        let groups: Groups = self.api("/api/v1/rules?type=alert").await?;
        Ok(groups.groups)
    }

    /// The names of every series Prometheus holds (`/api/v1/label/__name__/values`).
    pub async fn metric_names(&self) -> Result<Vec<String>, SandboxError> {
        self.api("/api/v1/label/__name__/values").await
    }

    /// Evaluates `expr` now (`/api/v1/query`); its result (`resultType` and `result`).
    pub async fn query(&self, expr: &str) -> Result<Value, SandboxError> {
        self.api(&format!("/api/v1/query?query={}", percent_encode(expr)))
            .await
    }

    /// Waits until every replica's target is up, for at most `within`.
    pub async fn wait_targets_up(
        &mut self,
        within: Duration,
    ) -> Result<Vec<ScrapeTarget>, SandboxError> {
        let deadline = Instant::now() + within;
        loop {
            self.still_running()?;
            let targets = self.scrape_targets().await?;
            let up = |t: &Target| {
                targets.iter().any(|s| {
                    s.labels.get("pod") == Some(&t.replica)
                        && s.labels.get("instance") == Some(&t.admin.to_string())
                        && s.health == "up"
                })
            };
            if self.targets.iter().all(up) {
                return Ok(targets);
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Timeout(format!(
                    "Prometheus to scrape every approver replica within {within:?}: {}",
                    targets
                        .iter()
                        .map(|t| format!("{} {} {}", t.scrape_url, t.health, t.last_error))
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `alert` fires, then until every rule group has been evaluated again
    /// after the evaluation that fired it, and returns that evaluation of every rule: a
    /// view of all the rules against the same scraped data.
    pub async fn wait_firing(
        &mut self,
        alert: &str,
        within: Duration,
    ) -> Result<Vec<RuleGroup>, SandboxError> {
        let deadline = Instant::now() + within;
        let mut fired_at: Option<Timestamp> = None;
        loop {
            self.still_running()?;
            let groups = self.rule_groups().await?;
            match fired_at {
                None => {
                    fired_at = groups
                        .iter()
                        .find(|g| g.rules.iter().any(|r| r.name == alert && r.is_firing()))
                        .map(|g| g.last_evaluation);
                }
                Some(t) => {
                    if groups.iter().all(|g| g.last_evaluation > t) {
                        return Ok(groups);
                    }
                }
            }
            if Instant::now() >= deadline {
                let states = rules_of(&groups)
                    .map(|r| format!("{} {}", r.name, r.state))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(SandboxError::Timeout(format!(
                    "Prometheus to fire {alert} within {within:?}; its rules: {states}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn still_running(&mut self) -> Result<(), SandboxError> {
        match self.process.try_wait()? {
            None => Ok(()),
            Some(status) => Err(SandboxError::Process(format!(
                "prometheus exited ({status}):\n{}",
                tail(&self.process.stderr().unwrap_or_default(), 20)
            ))),
        }
    }

    async fn api<T: DeserializeOwned>(&self, path: &str) -> Result<T, SandboxError> {
        #[derive(Deserialize)]
        struct Answer<T> {
            status: String,
            data: Option<T>,
            error: Option<String>,
        }
        let body = get(self.addr, path).await?;
        let answer: Answer<T> = serde_json::from_str(&body).map_err(|e| {
            SandboxError::Process(format!("prometheus GET {path}: {e}: {}", tail(&body, 5)))
        })?;
        match answer {
            Answer {
                data: Some(data),
                error: None,
                ..
            } if answer.status == "success" => Ok(data),
            Answer { status, error, .. } => Err(SandboxError::Process(format!(
                "prometheus GET {path}: {status}: {}",
                error.unwrap_or_default()
            ))),
        }
    }
}

/// One scrape target in `/api/v1/targets`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrapeTarget {
    /// Its labels after relabelling (`job`, `instance`, `namespace`, `pod`).
    pub labels: BTreeMap<String, String>,
    /// What is scraped.
    pub scrape_url: String,
    /// `up`, `down` or `unknown`.
    pub health: String,
    /// Why the last scrape failed.
    pub last_error: String,
}

/// One rule group in `/api/v1/rules`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleGroup {
    /// The group's name.
    pub name: String,
    /// Its rules.
    pub rules: Vec<AlertingRule>,
    /// When it was last evaluated.
    pub last_evaluation: Timestamp,
}

/// One alerting rule and its alerts.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertingRule {
    /// The alert name.
    pub name: String,
    /// `inactive`, `pending` or `firing`.
    pub state: String,
    /// `ok`, `err` or `unknown`: whether its last evaluation worked.
    pub health: String,
    /// Why it did not.
    #[serde(default)]
    pub last_error: String,
    /// The rule's own labels (`severity`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its active alerts.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

impl AlertingRule {
    /// Whether it fires.
    pub fn is_firing(&self) -> bool {
        self.state == "firing"
    }

    /// Its `severity` label.
    pub fn severity(&self) -> &str {
        self.labels.get("severity").map_or("", String::as_str)
    }
}

/// One active alert.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations, rendered.
    pub annotations: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
    /// The expression's value, as Prometheus writes it (`2e+00`).
    pub value: String,
}

/// Every alerting rule of `groups`.
pub fn rules_of(groups: &[RuleGroup]) -> impl Iterator<Item = &AlertingRule> {
    groups.iter().flat_map(|g| g.rules.iter())
}

/// Starts `binary` watching every approver replica of `sandbox`, with its files under
/// `<state>/prometheus/`, and says so.
pub async fn watch(sandbox: &Sandbox, binary: &Path) -> Result<Prometheus, SandboxError> {
    let dir = sandbox.state_dir().join("prometheus");
    std::fs::create_dir_all(&dir).map_err(|source| SandboxError::Io {
        path: dir.clone(),
        source,
    })?;
    let targets = targets(sandbox);
    let scrape = Scrape::for_sandbox(sandbox, &dir)?;
    let prometheus =
        Prometheus::start(binary, &dir, &sandbox.log_dir(), targets.clone(), &scrape).await?;
    sandbox.say(
        "prometheus",
        format!(
            "{} serves at {}, scraping {}://…/metrics of {} every {INTERVAL}{} and evaluating {RULES_PATH} with every `for:` set to 0s",
            binary.display(),
            prometheus.url(),
            scrape.scheme.as_str(),
            targets
                .iter()
                .map(|t| format!("{} ({})", t.replica, t.admin))
                .collect::<Vec<_>>()
                .join(", "),
            if scrape.bearer_token_file.is_some() {
                format!(" with the token of {}", control::OBSERVER)
            } else {
                String::new()
            },
        ),
    );
    Ok(prometheus)
}

/// Waits until Prometheus scrapes every replica and fires [`ADDRESS_CONFLICT`], says what
/// every alerting rule shows then, and returns the rules. Fails if `ADDRESS_CONFLICT` does
/// not fire within `within` or any rule's evaluation fails.
pub async fn check(
    sandbox: &Sandbox,
    prometheus: &mut Prometheus,
    within: Duration,
) -> Result<Vec<RuleGroup>, SandboxError> {
    let deadline = Instant::now() + within;
    let up = prometheus.wait_targets_up(within).await?;
    sandbox.say(
        "prometheus",
        format!(
            "scrapes {}",
            up.iter()
                .map(|t| format!("{} ({})", t.scrape_url, t.health))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let left = deadline.saturating_duration_since(Instant::now());
    let groups = prometheus.wait_firing(ADDRESS_CONFLICT, left).await?;
    for rule in rules_of(&groups) {
        let alerts = rule
            .alerts
            .iter()
            .filter(|a| a.state == "firing")
            .map(|a| {
                let labels = a
                    .labels
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity" | "job"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let summary = a.annotations.get("summary").map_or("", String::as_str);
                format!("{summary} ({labels})")
            })
            .collect::<Vec<_>>();
        let health = if rule.health == "ok" {
            String::new()
        } else {
            format!(" [evaluation {}: {}]", rule.health, rule.last_error)
        };
        sandbox.say(
            "prometheus",
            format!(
                "{} ({}) {}{health}{}{}",
                rule.name,
                rule.severity(),
                rule.state.to_uppercase(),
                if alerts.is_empty() { "" } else { ": " },
                alerts.join("; ")
            ),
        );
    }
    if let Some(alert) = rules_of(&groups)
        .filter(|r| r.name == ADDRESS_CONFLICT)
        .flat_map(|r| r.alerts.iter())
        .find(|a| a.state == "firing")
    {
        sandbox.say(
            "prometheus",
            format!(
                "{ADDRESS_CONFLICT}: {}",
                alert
                    .annotations
                    .get("description")
                    .map_or("", String::as_str)
            ),
        );
    }
    let broken: Vec<String> = rules_of(&groups)
        .filter(|r| r.health != "ok")
        .map(|r| format!("{} ({}): {}", r.name, r.health, r.last_error))
        .collect();
    if !broken.is_empty() {
        return Err(SandboxError::Process(format!(
            "rules whose evaluation failed: {}",
            broken.join("; ")
        )));
    }
    Ok(groups)
}

/// Waits for the `Listening on` and `Server is ready` lines of the server's log; returns
/// the address it listens on.
async fn wait_serving(process: &mut HostProcess) -> Result<SocketAddr, SandboxError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let log = process.stderr()?;
        let addr = log
            .lines()
            .filter(|l| l.contains("msg=\"Listening on\""))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|field| field.strip_prefix("address="))
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            });
        if let Some(addr) = addr
            && log.contains("Server is ready to receive web requests")
        {
            return Ok(addr);
        }
        if let Some(status) = process.try_wait()? {
            return Err(SandboxError::Process(format!(
                "prometheus exited ({status}) before serving:\n{}",
                tail(&log, 20)
            )));
        }
        if Instant::now() >= deadline {
            return Err(SandboxError::Timeout(format!(
                "prometheus to serve within {START_TIMEOUT:?}; its log:\n{}",
                tail(&log, 20)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `text` for a URL's query: every byte but the unreserved ones as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `GET path` as HTTP/1.0, so that the answer is neither chunked nor kept alive; the body
/// of a 200 answer.
async fn get(addr: SocketAddr, path: &str) -> Result<String, SandboxError> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| SandboxError::Timeout(format!("prometheus GET {path}")))?
        .map_err(|e| SandboxError::Process(format!("prometheus GET {path}: {e}")))?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| {
        SandboxError::Process(format!("prometheus GET {path}: no header/body separator"))
    })?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(SandboxError::Process(format!(
            "prometheus GET {path}: HTTP {status}: {}",
            tail(body, 5)
        )));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_for_of_the_rules_becomes_zero_and_nothing_else_changes() {
        let rules = without_for(RULES);
        let fors: Vec<&str> = rules
            .lines()
            .filter(|l| l.trim_start().starts_with("for:"))
            .collect();
        assert!(!fors.is_empty());
        assert!(fors.iter().all(|l| l.trim() == "for: 0s"), "{fors:?}");
        assert_eq!(
            fors.len(),
            RULES
                .lines()
                .filter(|l| l.trim_start().starts_with("- alert:"))
                .count(),
            "every rule has a `for:` on a line of its own"
        );
        assert_eq!(
            rules.lines().count(),
            RULES.lines().count(),
            "one line for one line"
        );
        for (before, after) in RULES.lines().zip(rules.lines()) {
            if !before.trim_start().starts_with("for:") {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn the_scrape_config_names_scheme_token_and_ca_only_when_given() {
        let targets = [
            Target {
                replica: "approver-0".into(),
                admin: "127.0.0.1:40001".parse().expect("addr"),
            },
            Target {
                replica: "approver-1".into(),
                admin: "127.0.0.1:40002".parse().expect("addr"),
            },
        ];
        let plain = config(
            &targets,
            &Scrape::default(),
            Path::new("/state/rules.yaml"),
            "rubber-stamp",
        );
        let job = &plain["scrape_configs"][0];
        assert_eq!(job["job_name"], JOB);
        assert_eq!(job["scheme"], "http");
        assert_eq!(job["metrics_path"], "/metrics");
        assert!(job.get("authorization").is_none());
        assert!(job.get("tls_config").is_none());
        assert_eq!(job["static_configs"][1]["targets"][0], "127.0.0.1:40002");
        assert_eq!(job["static_configs"][1]["labels"]["pod"], "approver-1");
        assert_eq!(
            job["static_configs"][0]["labels"]["namespace"],
            "rubber-stamp"
        );
        assert_eq!(plain["rule_files"][0], "/state/rules.yaml");
        assert_eq!(plain["global"]["evaluation_interval"], "1s");

        let tls = config(
            &targets,
            &Scrape {
                scheme: Scheme::Https,
                bearer_token_file: Some("/state/token".into()),
                ca_file: Some("/state/ca.crt".into()),
                server_name: Some("rubber-stamp-approver.rubber-stamp.svc".into()),
            },
            Path::new("/state/rules.yaml"),
            "rubber-stamp",
        );
        let job = &tls["scrape_configs"][0];
        assert_eq!(job["scheme"], "https");
        assert_eq!(
            job["authorization"],
            json!({ "type": "Bearer", "credentials_file": "/state/token" })
        );
        assert_eq!(
            job["tls_config"],
            json!({ "ca_file": "/state/ca.crt", "server_name": "rubber-stamp-approver.rubber-stamp.svc" })
        );
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"sum by (job) (x{a=~"b|c"}[5m]) > 0"#),
            "sum%20by%20%28job%29%20%28x%7Ba%3D~%22b%7Cc%22%7D%5B5m%5D%29%20%3E%200"
        );
    }

    #[test]
    fn an_explicit_binary_is_taken_as_given() {
        assert_eq!(
            find_binary(Some(Path::new("/opt/prometheus/prometheus"))),
            Some(PathBuf::from("/opt/prometheus/prometheus"))
        );
    }
}
