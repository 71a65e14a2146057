//! Resident memory and CPU time of a process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.

use std::time::Duration;

/// One reading of a process's resource use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// Resident anonymous memory (`RssAnon`: heap, stacks), KiB.
    pub anon_kib: u64,
    /// Resident file-backed memory (`RssFile`: the binary's and libraries' pages), KiB.
    pub file_kib: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
}

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The proc file could not be read.
    #[error("reading /proc/{pid}: {source}")]
    Read {
        /// The process.
        pid: u32,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The proc file did not have the expected shape.
    #[error("/proc/{pid}/{file}: unexpected format")]
    Format {
        /// The process.
        pid: u32,
        /// The file.
        file: &'static str,
    },
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`; 100 on every Linux
/// architecture the project targets).
pub const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// Reads `pid`'s resident memory and CPU time now.
pub fn usage(pid: u32) -> Result<Usage, ProcError> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|source| ProcError::Read { pid, source })
    };
    let status = read("status")?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(ProcError::Format {
                pid,
                file: "status",
            })
    };
    let stat = read("stat")?;
    // Fields after the command name (which may contain spaces) are in parentheses' wake.
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or(ProcError::Format { pid, file: "stat" })?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; after the comm they are at 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(ProcError::Format { pid, file: "stat" })
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Usage {
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
        anon_kib: kib("RssAnon:")?,
        file_kib: kib("RssFile:")?,
        cpu: Duration::from_millis(total * 1000 / CLOCK_TICKS_PER_SECOND),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let usage = usage(std::process::id()).expect("usage");
        assert!(usage.rss_kib > 0);
        assert!(usage.peak_rss_kib >= usage.rss_kib);
    }
}
