//! The monitoring the Helm chart ships — the alerting rules
//! (`deploy/helm/kubelet-rubber-stamp/files/alerts.yaml`) and the Grafana dashboard
//! (`files/dashboard.json`) — against the approver it watches:
//!
//! - every metric their PromQL selects is one the approver's registry exports, with the
//!   names the OpenMetrics encoder writes (`_total` for counters, `_bucket`/`_sum`/`_count`
//!   for histograms);
//! - every alert has a severity, a summary, a description and a runbook section that exists
//!   in docs/operations.md, and promtool unit tests in which it fires and stays silent;
//! - promtool accepts the rules and passes those tests (`.ci/test-monitoring --no-install`);
//! - a real Prometheus server scraping the sandbox's approvers fires
//!   `RubberStampAddressConflict` from the squatter, evaluates every rule without error,
//!   keeps the alerts of a healthy control plane silent, and answers every dashboard query.
//!
//! promtool and prometheus come from Debian's `prometheus` package, which CI installs
//! (`.ci/test-monitoring`; `.ci/run`'s monitoring step then exports
//! `RUBBER_STAMP_REQUIRE_PROMETHEUS=1` for the tests after it). Where they are missing, the
//! two tests that run them fail in CI (that variable, or `CI`, set) and are skipped visibly
//! elsewhere: a developer's `cargo test` does not need an apt package, and CI cannot skip
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rubber_stamp_approver::metrics::Metrics;
use rubber_stamp_e2e::deploy::repo_root;
use rubber_stamp_sandbox::csr::Condition;
use rubber_stamp_sandbox::prometheus::{self, AlertingRule};
use rubber_stamp_sandbox::scenario::{self, ScenarioOptions};
use rubber_stamp_sandbox::tokens::AgentIdentity;
use rubber_stamp_sandbox::{Timings, e2e};
use serde_json::Value;

const ALERTS: &str = "deploy/helm/kubelet-rubber-stamp/files/alerts.yaml";
const DASHBOARD: &str = "deploy/helm/kubelet-rubber-stamp/files/dashboard.json";
const ALERT_TESTS: &str = "deploy/monitoring/alerts_test.yaml";
const OPERATIONS: &str = "docs/operations.md";
/// Where the runbook is published; every `runbook_url` is a section of it.
const RUNBOOK: &str =
    "https://github.com/kubelet-rubber-stamp/kubelet-rubber-stamp/blob/main/docs/operations.md";
/// Set by `.ci/test-monitoring` in CI: the Prometheus tests must run.
const REQUIRE_ENV: &str = "RUBBER_STAMP_REQUIRE_PROMETHEUS";

fn read(path: &str) -> String {
    let full = repo_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every sample name the approver exports, with its family's type: from the registry's own
/// OpenMetrics output (every family's `# TYPE`), with the suffixes the encoder gives each
/// type's samples.
fn exported() -> BTreeMap<String, String> {
    use rubber_stamp_approver::metrics::{ResultLabel, listener};
    use rubber_stamp_listen::Events as _;
    let metrics = Metrics::new();
    // The encoder leaves out a labelled family until it has a child: give each one.
    metrics.grpc.refuse_connection("connection_limit");
    metrics.grpc.refuse_stream("token_audience");
    metrics.grpc.close_stream("client_closed");
    metrics
        .controller
        .decide("pending", "AddressConflict", false);
    metrics.controller.write("approve", "ok");
    metrics.controller.access_review("allowed");
    metrics.controller.challenge("sent");
    metrics.controller.event("published");
    metrics.controller.reconcile_error("write");
    metrics
        .listeners
        .accept_failed(listener::ADMIN, &std::io::Error::other("EMFILE"));
    metrics
        .listeners
        .shed(listener::ATTESTATION, "evicted_total");
    metrics.tls.refresh_failed("forbidden");
    metrics
        .admin_requests
        .get_or_create(&ResultLabel { result: "allowed" })
        .inc();
    for family in [
        &metrics.controller.proof.probes,
        &metrics.controller.proof.probes_limited,
    ] {
        family.get_or_create(&ResultLabel { result: "node" }).inc();
    }
    metrics
        .grpc
        .proof_receipts
        .get_or_create(&ResultLabel { result: "unknown" })
        .inc();
    metrics.controller.approval_latency.observe(0.2);
    metrics
        .controller
        .pending_csrs_by_reason
        .get_or_create(&rubber_stamp_approver::metrics::ReasonText {
            reason: "AddressConflict",
        })
        .set(1);
    let text = metrics.encode().expect("the registry encodes");
    // Every family registered is in the text: one registered later (a new labelled family
    // the lines above do not fill) would be missing, and fail here rather than as an
    // "unknown metric" of the rules.
    let registered = format!("{:?}", metrics.registry())
        .matches("Descriptor {")
        .count();
    let encoded = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(
        encoded, registered,
        "the registry has {registered} families and the text {encoded}: give the new labelled family a child above\n{text}"
    );
    let mut names = BTreeMap::new();
    for line in text.lines() {
        let Some(family) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = family.split_once(' ').expect("# TYPE name type");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "gauge" | "unknown" | "stateset" => &[""],
            "histogram" => &["_bucket", "_sum", "_count"],
            "gaugehistogram" => &["_gbucket", "_gsum", "_gcount"],
            "summary" => &["", "_sum", "_count"],
            "info" => &["_info"],
            other => panic!("{name}: a family of type {other}"),
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"), kind.to_owned());
        }
    }
    for sample in text.lines().filter(|l| !l.starts_with('#')) {
        let name = sample
            .split(['{', ' '])
            .next()
            .expect("a sample line names its metric");
        assert!(
            names.contains_key(name),
            "the encoder wrote {name}, which the suffixes of its # TYPE do not give:\n{text}"
        );
    }
    assert!(names.len() >= 30, "{names:?}");
    names
}

/// The metric names a PromQL expression selects: every identifier that is not a function
/// or aggregation (followed by `(`), a keyword, a label (in `{…}` or a grouping list), a
/// string, a number, a duration or a Grafana variable.
fn selected_metrics(expr: &str) -> BTreeSet<String> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
    // Strings, label matchers and ranges hold no metric name.
    let mut plain = String::with_capacity(expr.len());
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' && c != '`' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
                plain.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
                plain.push(' ');
            }
            _ => plain.push(c),
        }
    }
    let bytes: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let next_non_space = |from: usize| bytes[from..].iter().position(|c| !c.is_whitespace());
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() || c == '.' || c == '$' {
            // A number, a duration (`1h`), a Grafana variable: skip it whole.
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || "._$".contains(bytes[i]))
            {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || "_:".contains(bytes[i])) {
            i += 1;
        }
        let word: String = bytes[start..i].iter().collect();
        let next = next_non_space(i).map(|n| i + n);
        let opens = next.is_some_and(|n| bytes[n] == '(');
        if GROUPING.contains(&word.as_str()) {
            if let (true, Some(open)) = (opens, next) {
                let close = bytes[open..]
                    .iter()
                    .position(|&c| c == ')')
                    .unwrap_or_else(|| panic!("unclosed label list in {expr}"));
                i = open + close + 1;
            }
            continue;
        }
        if opens || AGGREGATIONS.contains(&word.as_str()) || KEYWORDS.contains(&word.as_str()) {
            continue;
        }
        names.insert(word);
    }
    names
}

/// The alerting rules of alerts.yaml.
fn alert_rules() -> Vec<serde_yaml::Value> {
    let file: serde_yaml::Value = serde_yaml::from_str(&read(ALERTS)).expect("alerts.yaml");
    let groups = file["groups"].as_sequence().expect("a `groups:` list");
    assert!(!groups.is_empty());
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter().cloned())
        .collect()
}

fn text<'a>(value: &'a serde_yaml::Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

/// Every PromQL expression of the dashboard: the panels' targets, and the metric queries of
/// its variables (`label_values(METRIC, label)`, `query_result(EXPR)`).
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", Value::String(expr)) => out.push(expr.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_else(|| panic!("variable without a query: {variable}"));
        if let Some(inner) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            let (metric, _label) = inner
                .rsplit_once(',')
                .unwrap_or_else(|| panic!("{query}: label_values(metric, label)"));
            out.push(metric.trim().to_owned());
        } else if let Some(inner) = query
            .strip_prefix("query_result(")
            .and_then(|q| q.strip_suffix(')'))
        {
            out.push(inner.to_owned());
        } else {
            panic!("a variable query this test does not read: {query}");
        }
    }
    out
}

#[test]
fn promql_metric_names_are_found_and_nothing_else() {
    let cases: [(&str, &[&str]); 6] = [
        (
            r#"sum by (namespace, job) (rate(rubber_stamp_a_total{reason!~"x|y", job="z"}[5m])) > 0"#,
            &["rubber_stamp_a_total"],
        ),
        (
            r#"histogram_quantile(0.99, sum by (le) (rate(rubber_stamp_h_seconds_bucket{job=~"$job"}[$__rate_interval])))"#,
            &["rubber_stamp_h_seconds_bucket"],
        ),
        (
            "(increase(c_total[1h]) > 0) or (c_total unless c_total offset 1h)",
            &["c_total"],
        ),
        (
            "min by (namespace, job, instance) (g > 0) - time() < 29 * 86400",
            &["g"],
        ),
        (
            "absent(up) or x / on (instance) group_left (pod) y",
            &["up", "x", "y"],
        ),
        (
            r#"count without (le) (b_bucket{le="+Inf"}) and bool 1e3 > nan"#,
            &["b_bucket"],
        ),
    ];
    for (expr, expected) in cases {
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(selected_metrics(expr), expected, "{expr}");
    }
}

#[test]
fn every_metric_in_the_alerts_and_the_dashboard_is_exported_by_the_approver() {
    let exported = exported();
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rule in alert_rules() {
        let name = text(&rule["alert"], "alert").to_owned();
        for metric in selected_metrics(text(&rule["expr"], "expr")) {
            used.entry(metric)
                .or_default()
                .push(format!("alert {name}"));
        }
    }
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard.json");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 20, "{queries:?}");
    for query in &queries {
        let metrics = selected_metrics(query);
        assert!(
            !metrics.is_empty(),
            "a dashboard query selects nothing: {query}"
        );
        for metric in metrics {
            used.entry(metric)
                .or_default()
                .push(format!("dashboard {query}"));
        }
    }
    let unknown: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exported.contains_key(*name))
        .map(|(name, uses)| format!("{name} (in {})", uses.join("; ")))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics the approver does not export:\n  {}\nexported:\n  {}",
        unknown.join("\n  "),
        exported.keys().cloned().collect::<Vec<_>>().join("\n  ")
    );
    // The families the issue asks the monitoring to watch are all used.
    for family in [
        "rubber_stamp_controller_decisions_total",
        "rubber_stamp_controller_pending_csrs",
        "rubber_stamp_controller_pending_csrs_by_reason",
        "rubber_stamp_controller_oldest_pending_csr_age_seconds",
        "rubber_stamp_controller_unattested_nodes",
        "rubber_stamp_controller_flood_valve_closed",
        "rubber_stamp_controller_leader",
        "rubber_stamp_controller_reconcile_errors_total",
        "rubber_stamp_tls_serving_certificate_expiry_timestamp_seconds",
        "rubber_stamp_controller_approval_latency_seconds_bucket",
        "rubber_stamp_attestation_live_streams",
        "rubber_stamp_attestation_refused_streams_total",
        "rubber_stamp_shed_connections_total",
    ] {
        assert!(used.contains_key(family), "{family} is watched by nothing");
    }
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_section() {
    let operations = read(OPERATIONS);
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|heading| github_anchor(heading.trim_start_matches('#')))
        .collect();
    let rules = alert_rules();
    assert!(rules.len() >= 10, "{} rules", rules.len());
    for rule in &rules {
        let name = text(&rule["alert"], "alert");
        assert!(name.starts_with("RubberStamp"), "{name}");
        assert!(
            matches!(
                text(&rule["labels"]["severity"], "severity"),
                "critical" | "warning"
            ),
            "{name}: severity {:?}",
            rule["labels"]["severity"]
        );
        text(&rule["for"], "for");
        let annotations = &rule["annotations"];
        let anchor = name.to_ascii_lowercase();
        assert!(
            anchors.contains(&anchor),
            "{name}: no section #{anchor} in {OPERATIONS}"
        );
        assert_eq!(
            text(&annotations["runbook_url"], "runbook_url"),
            format!("{RUNBOOK}#{anchor}"),
            "{name}"
        );
        assert!(!text(&annotations["summary"], "summary").is_empty());
        assert!(
            text(&annotations["description"], "description")
                .ends_with(&format!("See docs/operations.md#{anchor}")),
            "{name}: the description ends with its runbook section"
        );
    }
    // The alerting section lists every alert.
    let section = operations
        .split_once("\n## Alerts\n")
        .map(|(_, rest)| rest)
        .expect("docs/operations.md has an Alerts section");
    for rule in &rules {
        let name = text(&rule["alert"], "alert");
        assert!(section.contains(&format!("`{name}`")), "{name}");
    }
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation but `-` and `_` dropped,
/// spaces as `-`.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_promtool_tests_make_every_alert_fire_and_stay_silent() {
    let tests: serde_yaml::Value = serde_yaml::from_str(&read(ALERT_TESTS)).expect("alerts_test");
    assert_eq!(
        tests["rule_files"][0].as_str(),
        Some("../helm/kubelet-rubber-stamp/files/alerts.yaml"),
        "the tests load the chart's file"
    );
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"]
            .as_sequence()
            .expect("alert_rule_test")
        {
            let name = text(&case["alertname"], "alertname").to_owned();
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected == 0 {
                silent.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    for rule in alert_rules() {
        let name = text(&rule["alert"], "alert");
        assert!(fires.contains(name), "no promtool case where {name} fires");
        assert!(
            silent.contains(name),
            "no promtool case where {name} stays silent"
        );
    }
}

/// Whether the Prometheus tools must be present: CI says so.
fn required() -> bool {
    let set =
        |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set(REQUIRE_ENV) || set("CI")
}

/// `found`, or `None` after a visible SKIPPED line where the tool may be missing; panics
/// where it may not.
fn tool_or_skip(test: &str, tool: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    let install = "Debian: apt-get install --no-install-recommends prometheus, or run .ci/test-monitoring as root, which installs it";
    assert!(
        !required(),
        "{test}: {tool} not found ({install}). CI installs it in .ci/test-monitoring; {REQUIRE_ENV} or CI is set, so this test does not skip."
    );
    // Straight to the stderr handle: the harness captures `eprintln!` of passing tests.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {tool} not found ({install})"
    );
    None
}

fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

#[test]
fn promtool_accepts_the_rules_and_passes_their_unit_tests() {
    const TEST: &str = "promtool_accepts_the_rules_and_passes_their_unit_tests";
    if tool_or_skip(TEST, "promtool", on_path("promtool")).is_none() {
        return;
    }
    let script = repo_root().join(".ci/test-monitoring");
    let output = Command::new(&script)
        .arg("--no-install")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(report.contains("SUCCESS"), "{report}");
    assert!(report.contains("test-monitoring: ok"), "{report}");
}

/// The alerts a healthy control plane keeps silent in the sandbox: it has a leader, one,
/// scraped, no flood, no failing listener or certificate refresh (its CA is in files, so
/// the CA gauge is 0: unknown).
const SILENT_IN_THE_SANDBOX: &[&str] = &[
    "RubberStampNoLeader",
    "RubberStampApproverAbsent",
    "RubberStampMultipleLeaders",
    "RubberStampFloodValveClosed",
    "RubberStampNodeApprovalsHeld",
    "RubberStampAcceptErrors",
    "RubberStampCAExpiring",
    "RubberStampTLSRefreshErrors",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_prometheus_fires_address_conflict_from_the_sandboxs_squatter() {
    const TEST: &str = "a_real_prometheus_fires_address_conflict_from_the_sandboxs_squatter";
    let Some(binary) = tool_or_skip(TEST, "prometheus", prometheus::find_binary(None)) else {
        return;
    };
    let Some(mut sandbox) = e2e::namespaced(TEST, Timings::fast()).await else {
        return;
    };
    let mut server = prometheus::watch(&sandbox, &binary)
        .await
        .expect("Prometheus starts and scrapes the approvers");
    let outcome = scenario::run(
        &mut sandbox,
        &ScenarioOptions {
            honest: 1,
            rogues: true,
            timeout: Duration::from_secs(30),
            identity: AgentIdentity::Token,
        },
    )
    .await
    .expect("the scenario runs");
    assert!(outcome.success(), "problems: {:#?}", outcome.problems);
    let squatter = outcome.rows_of("squatter");
    assert!(
        squatter
            .iter()
            .all(|r| r.condition == Condition::Pending && r.reason == "AddressConflict"),
        "{squatter:?}"
    );

    let groups = prometheus::check(&sandbox, &mut server, Duration::from_secs(60))
        .await
        .expect("Prometheus fires RubberStampAddressConflict and evaluates every rule");
    let rules: Vec<&AlertingRule> = prometheus::rules_of(&groups).collect();
    let rule = |name: &str, severity: &str| -> &AlertingRule {
        rules
            .iter()
            .find(|r| r.name == name && r.severity() == severity)
            .unwrap_or_else(|| panic!("no rule {name} ({severity}) in Prometheus: {rules:#?}"))
    };
    assert_eq!(
        rules.len(),
        alert_rules().len(),
        "Prometheus evaluates every rule of {ALERTS}"
    );

    // The conflict: the squatter's and the cloud rogue's CSRs, decided by the leader.
    let conflict = rule(prometheus::ADDRESS_CONFLICT, "critical");
    assert!(conflict.is_firing(), "{conflict:#?}");
    let alert = conflict.alerts.first().expect("one alert");
    assert_eq!(
        alert.labels.get("namespace").map(String::as_str),
        Some("rubber-stamp")
    );
    assert_eq!(
        alert.labels.get("job").map(String::as_str),
        Some(prometheus::JOB)
    );
    let decisions: f64 = alert.value.parse().expect("a number");
    assert!(decisions >= 2.0, "{alert:#?}");
    assert!(
        alert.annotations["description"].contains("AddressConflict"),
        "{alert:#?}"
    );

    // What else is true of the sandbox: CSRs wait (squatter, no-agent, cloud-rogue,
    // foreign-token), but for seconds, not the alert's 30 minutes (its `for:` is 0s here,
    // its bound is not); two Nodes have no attestation (no-agent, foreign-token).
    let csrs_pending = rule("RubberStampCSRsPending", "warning");
    assert!(!csrs_pending.is_firing(), "{csrs_pending:#?}");
    assert!(rule("RubberStampNodesUnattested", "warning").is_firing());
    for name in SILENT_IN_THE_SANDBOX {
        for r in rules.iter().filter(|r| r.name == *name) {
            assert_eq!(r.state, "inactive", "{r:#?}");
        }
    }
    // The serving certificate's alert follows the gauge the approvers export.
    let metrics = sandbox.approvers()[0].metrics().await.expect("metrics");
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("rubber_stamp_tls_serving_certificate_expiry_timestamp_seconds ")
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("the serving certificate's expiry gauge");
    let left = expiry - jiff::Timestamp::now().as_second() as f64;
    assert!(left > 0.0, "the sandbox's serving certificate is valid");
    assert_eq!(
        rule("RubberStampServingCertificateExpiring", "critical").is_firing(),
        left < 7.0 * 86_400.0,
        "{left} s left"
    );
    assert_eq!(
        rule("RubberStampServingCertificateExpiring", "warning").is_firing(),
        left < 29.0 * 86_400.0,
        "{left} s left"
    );

    // Every approver series Prometheus ingested is one the registry declares: the
    // suffixes `exported` assumes are the ones a real scrape produces.
    let exported = exported();
    let scraped: Vec<String> = server
        .metric_names()
        .await
        .expect("series names")
        .into_iter()
        .filter(|n| n.starts_with("rubber_stamp_"))
        .collect();
    assert!(
        scraped.iter().any(|n| n.ends_with("_bucket"))
            && scraped.iter().any(|n| n.ends_with("_total")),
        "{scraped:?}"
    );
    for name in &scraped {
        assert!(
            exported.contains_key(name),
            "Prometheus holds {name}, which the registry does not declare"
        );
    }

    // Every dashboard query evaluates against the real data.
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard.json");
    for query in dashboard_queries(&dashboard) {
        let expr = query
            .replace("$__rate_interval", "1m")
            .replace("$job", ".+")
            .replace("$instance", ".+");
        server
            .query(&expr)
            .await
            .unwrap_or_else(|e| panic!("dashboard query {query}: {e}"));
    }
    let oldest = server
        .query(r#"max(rubber_stamp_controller_oldest_pending_csr_age_seconds)"#)
        .await
        .expect("query");
    assert!(
        !oldest["result"].as_array().is_some_and(Vec::is_empty),
        "the age of the oldest pending CSR is scraped: {oldest}"
    );
    let pending = server
        .query(r#"max(rubber_stamp_controller_pending_csrs{job=~".+", instance=~".+"})"#)
        .await
        .expect("query");
    assert_eq!(pending["resultType"], "vector", "{pending}");
    assert!(
        !pending["result"].as_array().is_some_and(Vec::is_empty),
        "{pending}"
    );
}
