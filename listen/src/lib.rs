//! Bounded listeners for the agent and the approver: every accepted connection holds a slot
//! of a pool bounded in total and per source address, a full pool makes room by closing the
//! oldest connection of the busiest source, accept errors back off and are logged at a
//! bounded rate, and the process's open-file limit is raised and budgeted at start; dual-stack
//! binding; and the signals both binaries stop on.
//!
//! Both binaries use it for every listener (the approver's attestation, health and admin
//! ports, the agent's health port), so there is one implementation of these rules.
//!
//! # Layout
//!
//! - [`descriptors`]: raise `RLIMIT_NOFILE` to the hard limit; fit connection limits into it.
//! - [`pool`]: connection slots per source address, and which one to evict when full.
//! - [`mod@bind`]: binding, `[::]` dual-stack with an IPv4 fallback.
//! - [`mod@accept`]: the accept loop: slots, eviction, backoff on accept errors, and the
//!   plaintext gate (a connection must send its first bytes in time).
//! - [`connection`]: [`Admitted`], a connection that holds its slot and fails once evicted.
//! - [`throttle`]: at most one log line per interval, counting the ones held back.
//! - [`signals`]: [`termination`], SIGTERM or SIGINT.

pub mod accept;
pub mod bind;
pub mod connection;
pub mod descriptors;
pub mod pool;
pub mod signals;
pub mod throttle;

pub use accept::{Events, Incoming, Pending, PlaintextLimits, accept, plaintext};
pub use bind::bind;
pub use connection::Admitted;
pub use descriptors::{Budget, Clamp, NofileLimit, raise_nofile_limit, raise_nofile_limit_logged};
pub use pool::{Eviction, Pool, PoolFull, PoolLimits, Slot};
pub use signals::termination;
pub use throttle::Throttle;
