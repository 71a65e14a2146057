//! The running commentary: short timestamped lines saying what happens and
//! why, printed as they come (the sandbox) and kept (tests print them when
//! they fail).

use std::fmt::Display;
use std::io::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Where lines go besides the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// Standard output (the sandbox).
    Stdout,
    /// Standard error through `eprintln!` (captured by the test harness).
    Stderr,
    /// Only recorded (tests).
    Off,
}

/// Prints and records lines like `[  1.2s] approver   approver-0 holds the Lease`.
#[derive(Debug)]
pub struct Narrator {
    start: Mutex<Instant>,
    echo: Echo,
    lines: Mutex<Vec<String>>,
}

/// Width of the speaker column.
const WHO_WIDTH: usize = 10;

impl Narrator {
    /// A narrator whose clock starts now.
    pub fn new(echo: Echo) -> Self {
        Self {
            start: Mutex::new(Instant::now()),
            echo,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Says `what`, attributed to `who` (a component or node name).
    pub fn say(&self, who: &str, what: impl Display) {
        let elapsed = self.elapsed().as_secs_f64();
        let line = format!("[{elapsed:5.1}s] {who:<WHO_WIDTH$} {what}");
        self.emit(line);
    }

    /// A line without timestamp or speaker (tables, blank lines).
    pub fn raw(&self, text: impl Display) {
        self.emit(text.to_string());
    }

    fn emit(&self, line: String) {
        // Output that cannot be written (a closed pipe) must not stop the run.
        match self.echo {
            Echo::Stdout => {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
            // The macro, not the handle: test harnesses capture it and show
            // it when the test fails.
            Echo::Stderr => eprintln!("{line}"),
            Echo::Off => {}
        }
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    /// Everything said so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Everything said so far, one line each.
    pub fn transcript(&self) -> String {
        let mut out = self.lines().join("\n");
        out.push('\n');
        out
    }

    /// Time since the narrator started (or its clock restarted).
    pub fn elapsed(&self) -> std::time::Duration {
        self.start
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    /// Starts the clock again (after a build, so times show the run itself).
    pub fn restart_clock(&self) {
        *self.start.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }
}
