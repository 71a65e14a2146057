//! The shipped RBAC is enough for the controller, and every rule of it that the controller
//! relies on is needed: a smoke scenario (a CSR approved with its Event, the flood valve's
//! Event on the Lease) passes with `deploy/`'s RBAC and fails with each such rule removed.
//! The rules for Secrets and ConfigMaps serve the gRPC PKI bootstrap, and those for
//! TokenReviews and Pods the attestation port's token identity, not the controller: the
//! scenario passes without them, and their own tests show they are needed (`tokens.rs` for
//! the token path).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::future::join_all;
use kube::ResourceExt as _;
use rubber_stamp_approver::controller::config::DEFAULT_LEASE_NAME;
use rubber_stamp_e2e::controller::rbac::{RuleRef, rules, without_rule};
use rubber_stamp_e2e::controller::{
    ControllerBed, deploy_rbac_yaml, eventually, is_approved, wait_for_csr,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long the scenario waits for each outcome (each takes well under a second).
const STEP: Duration = Duration::from_secs(5);

/// Resources of rules that serve the PKI bootstrap (issue 7) and the agents' token identity
/// (issue 16), not the controller.
const NOT_THE_CONTROLLERS: [&str; 4] = ["secrets", "configmaps", "tokenreviews", "pods"];

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, last))
}

/// Runs the controller under `rbac` through everything it does; says what did not happen.
async fn smoke(rbac: &str) -> Result<(), String> {
    let bed = ControllerBed::start_with_rbac(rbac)
        .await
        .map_err(|e| format!("cluster: {e}"))?;
    let mut config = bed.controller_config("approver-0");
    config.max_pending_csrs = Some(1);
    let replica = bed
        .replica(config, false)
        .await
        .map_err(|e| format!("replica: {e}"))?;
    let outcome = async {
        bed.add_node("smoke-1", &[ip(1)])
            .map_err(|e| e.to_string())?;
        let agent = bed
            .agent("smoke-1", &[&replica], &[ip(1)])
            .await
            .map_err(|e| e.to_string())?;
        agent.report().await.map_err(|e| e.to_string())?;
        let csr = bed
            .create_csr("smoke-1", &[ip(1)])
            .await
            .map_err(|e| e.to_string())?;
        let name = csr.name_any();
        wait_for_csr(&bed, &name, STEP, is_approved)
            .await
            .map_err(|_| "the CSR was not approved".to_owned())?;
        eventually("the Approved Event", STEP, || {
            bed.event_reasons(&name)
                .is_ok_and(|r| r.iter().any(|r| r == "Approved"))
        })
        .await
        .map_err(|_| "no Approved Event on the CSR".to_owned())?;
        for node in ["smoke-2", "smoke-3"] {
            bed.create_csr(node, &[]).await.map_err(|e| e.to_string())?;
        }
        eventually("the flood valve's Event", STEP, || {
            bed.event_reasons(DEFAULT_LEASE_NAME)
                .is_ok_and(|r| r.iter().any(|r| r == "FloodValveClosed"))
        })
        .await
        .map_err(|_| "no FloodValveClosed Event on the Lease".to_owned())?;
        Ok::<(), String>(())
    }
    .await;
    replica.stop().await.map_err(|e| format!("stopping: {e}"))?;
    outcome
}

#[tokio::test]
async fn the_shipped_rbac_suffices_and_every_rule_the_controller_relies_on_is_needed() -> TestResult
{
    let yaml = deploy_rbac_yaml()?;
    // The admin port's ClusterRoles (non-resource URLs) are for its callers, bound by the
    // operator to Prometheus and the on-call engineers, never to the approver:
    // `controller::admin_auth` shows what each allows.
    let all: Vec<RuleRef> = rules(&yaml)?
        .into_iter()
        .filter(|r| !r.resources.is_empty())
        .collect();
    let (pki, controllers): (Vec<RuleRef>, Vec<RuleRef>) = all.into_iter().partition(|r| {
        !r.resources.is_empty()
            && r.resources
                .iter()
                .all(|res| NOT_THE_CONTROLLERS.contains(&res.as_str()))
    });
    assert!(
        controllers.len() >= 8,
        "the controller's rules: {controllers:#?}"
    );

    let full = smoke(&yaml);
    let variants: Vec<_> = controllers
        .iter()
        .chain(&pki)
        .map(|rule| {
            let yaml = without_rule(&yaml, rule);
            async move {
                match yaml {
                    Ok(yaml) => smoke(&yaml).await,
                    Err(e) => Err(format!("variant: {e}")),
                }
            }
        })
        .collect();
    let (full, outcomes) = tokio::join!(full, join_all(variants));
    if let Err(what) = full {
        return Err(format!("with the shipped RBAC: {what}").into());
    }
    let mut unneeded = Vec::new();
    for (rule, outcome) in controllers.iter().zip(&outcomes) {
        match outcome {
            Err(what) => println!("without {} ({}): {what}", rule.summary, rule.role),
            Ok(()) => unneeded.push(format!("{} ({})", rule.summary, rule.role)),
        }
    }
    assert!(
        unneeded.is_empty(),
        "the controller works without these rules: {unneeded:#?}"
    );
    for (rule, outcome) in pki.iter().zip(&outcomes[controllers.len()..]) {
        assert!(
            outcome.is_ok(),
            "{} ({}) is not the controller's, yet it fails without it: {outcome:?}",
            rule.summary,
            rule.role
        );
    }
    Ok(())
}
