//! The process's open-file limit: raised from the soft to the hard limit at start (container
//! runtimes under systemd give containers a soft limit of 1024; Go programs raise theirs,
//! Rust's standard library does not), and a budget that every listener's connection limit
//! must fit into, so a flood on one port cannot take the descriptors another port or the
//! process itself needs.

use std::fmt;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The open-file limit before and after [`raise_nofile_limit`] (`None`: unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process started with.
    pub before: Option<u64>,
    /// The soft limit now.
    pub soft: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// Why the soft limit could not be raised.
#[derive(Debug, thiserror::Error)]
#[error("raising the open-file limit (soft {soft:?}) to the hard limit {hard:?}: {source}")]
pub struct RaiseError {
    /// The soft limit, unchanged.
    pub soft: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
    /// What the kernel said.
    pub source: std::io::Error,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. An unlimited hard limit leaves the
/// soft one as it is (the kernel refuses an unlimited soft limit for open files).
pub fn raise_nofile_limit() -> Result<NofileLimit, RaiseError> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let mut limit = NofileLimit {
        before: current,
        soft: current,
        hard: maximum,
    };
    if let Some(hard) = maximum
        && current.is_some_and(|soft| soft < hard)
    {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum,
            },
        )
        .map_err(|errno| RaiseError {
            soft: current,
            hard: maximum,
            source: errno.into(),
        })?;
        limit.soft = Some(hard);
    }
    Ok(limit)
}

/// [`raise_nofile_limit`], logged (the limits at info, a failure as a warning), as both
/// binaries do at start; returns the soft limit in force (`None`: unlimited).
pub fn raise_nofile_limit_logged() -> Option<u64> {
    match raise_nofile_limit() {
        Ok(limit) => {
            tracing::info!(
                soft_before = ?limit.before,
                soft = ?limit.soft,
                hard = ?limit.hard,
                "open-file limit"
            );
            limit.soft
        }
        Err(error) => {
            tracing::warn!(%error, "keeping the open-file limit");
            error.soft
        }
    }
}

/// Descriptors for connection limits: the soft limit less a reserve for everything else
/// (the API client, files, the runtime), handed out in order of importance. A limit that
/// does not fit is lowered to what is left (at least one) and recorded as a [`Clamp`].
#[derive(Debug)]
pub struct Budget {
    limit: Option<u64>,
    reserved: u64,
    left: u64,
    clamps: Vec<Clamp>,
}

/// A configured limit lowered to fit the open-file limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clamp {
    /// The flag that set it, e.g. `--max-connections`.
    pub flag: &'static str,
    /// Its configured value.
    pub configured: u64,
    /// The value used.
    pub used: u64,
    /// The open-file limit.
    pub limit: u64,
    /// Descriptors kept in reserve.
    pub reserved: u64,
}

impl Clamp {
    /// Logs the clamp as a warning with its fields.
    pub fn log(&self) {
        tracing::warn!(
            flag = self.flag,
            configured = self.configured,
            used = self.used,
            open_file_limit = self.limit,
            reserved = self.reserved,
            "{self}"
        );
    }
}

impl Budget {
    /// A budget of `limit` descriptors (`None`: unlimited) less `reserved` (`flag` names the
    /// reserve's flag). The reserve is at most half the limit.
    pub fn new(limit: Option<u64>, reserved: usize, flag: &'static str) -> Self {
        let wanted = reserved as u64;
        let mut budget = Self {
            limit,
            reserved: wanted,
            left: u64::MAX,
            clamps: Vec::new(),
        };
        if let Some(limit) = limit {
            budget.reserved = wanted.min(limit / 2);
            budget.left = limit - budget.reserved;
            if budget.reserved < wanted {
                budget.clamps.push(Clamp {
                    flag,
                    configured: wanted,
                    used: budget.reserved,
                    limit,
                    reserved: budget.reserved,
                });
            }
        }
        budget
    }

    /// Up to `wanted` of what is left, at least one.
    pub fn grant(&mut self, flag: &'static str, wanted: usize) -> usize {
        self.grant_part(flag, wanted, 1, 1)
    }

    /// Up to `wanted` and at most `numerator / denominator` of what is left, at least one.
    pub fn grant_part(
        &mut self,
        flag: &'static str,
        wanted: usize,
        numerator: u64,
        denominator: u64,
    ) -> usize {
        let cap = self
            .left
            .checked_mul(numerator)
            .map_or(self.left, |n| n / denominator.max(1));
        let used = (wanted as u64).min(cap).max(1);
        self.left = self.left.saturating_sub(used);
        if let Some(limit) = self.limit
            && used < wanted as u64
        {
            self.clamps.push(Clamp {
                flag,
                configured: wanted as u64,
                used,
                limit,
                reserved: self.reserved,
            });
        }
        usize::try_from(used).unwrap_or(usize::MAX)
    }

    /// Descriptors not granted yet (beyond the reserve).
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The limits lowered so far.
    pub fn clamps(&self) -> &[Clamp] {
        &self.clamps
    }
}

impl fmt::Display for Clamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} does not fit the open-file limit {} ({} kept in reserve, the rest shared by every listener); using {}",
            self.flag, self.configured, self.limit, self.reserved, self.used
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_fit_are_kept_as_configured() {
        let mut budget = Budget::new(Some(1_048_576), 256, "--reserved-descriptors");
        assert_eq!(budget.grant("--health-max-connections", 64), 64);
        assert_eq!(budget.grant_part("--max-handshakes", 1024, 1, 4), 1024);
        assert_eq!(budget.grant("--max-connections", 20_000), 20_000);
        assert!(budget.clamps().is_empty());
        let mut unlimited = Budget::new(None, 256, "--reserved-descriptors");
        assert_eq!(unlimited.grant("--max-connections", usize::MAX), usize::MAX);
        assert!(unlimited.clamps().is_empty());
    }

    #[test]
    fn limits_that_do_not_fit_are_lowered_in_order_and_named() {
        // The attacker's setting: soft = hard = 1024.
        let mut budget = Budget::new(Some(1024), 256, "--reserved-descriptors");
        assert_eq!(budget.grant("--health-max-connections", 64), 64);
        assert_eq!(budget.grant("--admin-max-connections", 64), 64);
        assert_eq!(budget.grant_part("--max-handshakes", 1024, 1, 4), 160);
        assert_eq!(budget.grant("--max-connections", 20_000), 480);
        assert_eq!(budget.left(), 0);
        let clamps = budget.clamps();
        assert_eq!(clamps.len(), 2);
        assert_eq!(clamps[0].flag, "--max-handshakes");
        assert_eq!(
            clamps[1].to_string(),
            "--max-connections 20000 does not fit the open-file limit 1024 (256 kept in reserve, the rest shared by every listener); using 480"
        );
        // Nothing left: every limit still gets one.
        assert_eq!(budget.grant("--late", 5), 1);
    }

    #[test]
    fn the_reserve_is_at_most_half_the_limit() {
        let mut budget = Budget::new(Some(100), 256, "--reserved-descriptors");
        assert_eq!(budget.clamps()[0].used, 50);
        assert_eq!(budget.grant("--max-connections", 1000), 50);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        // This process's own limit: raising it is what the binaries do at start.
        let limit = raise_nofile_limit().expect("raise");
        assert_eq!(limit.soft, limit.hard.or(limit.before));
        assert_eq!(getrlimit(Resource::Nofile).current, limit.soft);
    }
}
