//! Helpers for the end-to-end tests (`e2e/tests/e2e/*.rs`): a sandbox in
//! namespace mode with fast timings (failing, or skipping visibly with
//! `SKIP_NETNS=1`, where namespaces are unavailable), and small waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::csr::CsrRow;
use super::tokens::AgentIdentity;
use super::{Echo, ModeChoice, Narrator, Sandbox, SandboxOptions, Timings};
use rubber_stamp_hosts as hosts;

/// A sandbox with simulated hosts and `timings`, or `None` when the test
/// must skip (see [`hosts::available_or_skip`]: without root it fails
/// unless `SKIP_NETNS=1`). The commentary goes to stderr, which the test
/// harness shows when the test fails.
pub async fn namespaced(test: &str, timings: Timings) -> Option<Sandbox> {
    namespaced_with(test, timings, AgentIdentity::default()).await
}

/// Like [`namespaced`], with the agents attesting with `identity`.
pub async fn namespaced_with(
    test: &str,
    timings: Timings,
    identity: AgentIdentity,
) -> Option<Sandbox> {
    if !hosts::available_or_skip(test) {
        return None;
    }
    let narrator = Arc::new(Narrator::new(Echo::Stderr));
    match Sandbox::start(
        SandboxOptions {
            mode: ModeChoice::Namespaces,
            timings,
            identity,
            ..SandboxOptions::default()
        },
        narrator,
    )
    .await
    {
        Ok(s) => Some(s),
        Err(e) => panic!("{test}: the sandbox did not start: {e}"),
    }
}

/// The CSRs of `node`.
pub fn of<'a>(rows: &'a [CsrRow], node: &str) -> Vec<&'a CsrRow> {
    rows.iter().filter(|r| r.node == node).collect()
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `within`;
/// panics with `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
