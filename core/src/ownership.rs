//! Check 15's input: what the network said when the approver sent a nonce to an IP SAN
//! (docs/design.md, "Proof of address ownership").
//!
//! The controller probes; the core only reads what came of it. A [`ProofState`] is the
//! latest probe of one SAN for one CSR. Receipts are matched to the node of the stream
//! they arrived on (TLS- or TokenReview-verified), never to anything the message says.

use std::net::IpAddr;

use jiff::Timestamp;

/// What the latest probe of one IP SAN for one CSR found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProofState {
    /// A probe is under way: sent, and its deadline has not passed.
    Probing {
        /// When it was sent.
        since: Timestamp,
    },
    /// The requesting node's agent received the nonce sent to the SAN.
    Proven {
        /// When the receipt arrived.
        at: Timestamp,
        /// The local address it arrived on, as that agent reported it (the SAN itself,
        /// or another of the node's addresses behind a NAT).
        local: IpAddr,
    },
    /// Another node's agent received the nonce sent to the SAN.
    ReceivedByOther {
        /// The node whose stream the receipt arrived on.
        node: String,
        /// The local address it arrived on, as that agent reported it.
        local: IpAddr,
        /// When.
        at: Timestamp,
    },
    /// The address refused the connection while the requesting node's agent, which
    /// listens on every address of its node, kept the same stream open from before the
    /// probe until after: the host the network delivers the address to is not running
    /// the requester's proof listener.
    Refused {
        /// When.
        at: Timestamp,
    },
    /// No agent reported the nonce before the deadline, or the connection failed in a
    /// way that says nothing about who holds the address.
    Unanswered {
        /// When the latest attempt ended.
        at: Timestamp,
        /// Attempts so far.
        attempts: u32,
        /// Consecutive attempts, up to the latest, in which something at the address took
        /// the nonce but no agent reported it: a listener that is not a proof listener, or
        /// one whose receipts a flood crowded out. 0 when the latest did not connect.
        delivered: u32,
        /// What happened, in plain words (`timed out after 2s`, `no route to host`).
        what: String,
    },
}

/// The results of probes, by CSR name, requesting node and SAN.
pub trait OwnershipLookup {
    /// The latest probe of `san` for the CSR `csr` requested by `node`, if any.
    fn proof(&self, csr: &str, node: &str, san: IpAddr) -> Option<ProofState>;
}

/// Under `preferred`, a probe whose nonce was taken at the address but never reported
/// lets the SAN pass only after this many such attempts in a row: something listens there,
/// and a moment's flood of the owner's proof port must not decide.
pub const DELIVERED_UNREPORTED_BEFORE_PASSING: u32 = 3;

/// Check 15's inputs: the probes' results and the port the approver probes.
#[derive(Clone, Copy)]
pub struct Ownership<'a> {
    /// The latest probe of every SAN.
    pub lookup: &'a dyn OwnershipLookup,
    /// The agents' proof port the approver probes (its own setting, never a node's word).
    pub port: u16,
}

impl std::fmt::Debug for Ownership<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// No probe has been made: every SAN has no [`ProofState`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProofs;

impl OwnershipLookup for NoProofs {
    fn proof(&self, _csr: &str, _node: &str, _san: IpAddr) -> Option<ProofState> {
        None
    }
}
