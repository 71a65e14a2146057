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

/// CPU time of every thread of `pid`, in nanoseconds, from `/proc/<pid>/task/*/schedstat`
/// (the scheduler's own accounting, far finer than the 10 ms ticks of `stat`). Threads that
/// exited are not counted.
pub fn cpu_time_precise(pid: u32) -> Result<Duration, ProcError> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|source| ProcError::Read { pid, source })?;
    let mut total = 0u64;
    for task in tasks {
        let task = task.map_err(|source| ProcError::Read { pid, source })?;
        // A thread may exit between listing and reading.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .ok_or(ProcError::Format {
                pid,
                file: "schedstat",
            })?;
    }
    Ok(Duration::from_nanos(total))
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

    #[test]
    fn precise_cpu_time_grows_with_work() {
        let pid = std::process::id();
        let before = cpu_time_precise(pid).expect("schedstat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = cpu_time_precise(pid).expect("schedstat");
        assert!(
            after.saturating_sub(before) >= Duration::from_millis(10),
            "{before:?} → {after:?}"
        );
    }
}
