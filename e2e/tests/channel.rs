//! The attested channel, in-process on loopback: the approver's attestation service and
//! the agent's session, with real TLS.
//!
//! - `agent`: the real agent against the real approver service.
//! - `approver`: the approver's service against raw clients with any certificate.

#[path = "channel/agent.rs"]
mod agent;
#[path = "channel/approver.rs"]
mod approver;
