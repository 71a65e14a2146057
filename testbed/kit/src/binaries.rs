//! Finding the real binaries the sandbox and the end-to-end tests run
//! (`rubber-stamp-approver`, `rubber-stamp-agent`, `kubelet-sim`), built in
//! the same profile and target directory as the running executable.
//!
//! `cargo test --workspace` (the README's test command) builds every binary
//! of the workspace before it runs tests, and `cargo run --bin sandbox` runs
//! with `CARGO` set; so:
//!
//! - a binary next to the running executable (`target/<profile>/`, also for
//!   test executables in `target/<profile>/deps/`) that is newer than every
//!   source file it is built from is used as is;
//! - a missing or older one is built with `cargo build` of exactly the needed
//!   binaries, in the same profile and target directory, when cargo is known
//!   (`CARGO` at run time or at build time);
//! - otherwise the error says which binary is missing and the command that
//!   builds it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// The workspace root, known at build time (this crate is `testbed/kit/`).
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Why the binaries could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    /// The running executable's location is unknown.
    #[error("cannot tell where this executable is: {0}")]
    CurrentExe(std::io::Error),
    /// Binaries are missing or stale and cargo cannot be run.
    #[error("{what}; build them with `{command}`")]
    Missing {
        /// Which binaries and why.
        what: String,
        /// The command that builds them.
        command: String,
    },
    /// `cargo build` failed.
    #[error("`{command}` failed ({status}); see its output above")]
    Build {
        /// The command.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// `cargo build` could not be started.
    #[error("starting `{command}`: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Paths of the real binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `rubber-stamp-approver`.
    pub approver: PathBuf,
    /// `rubber-stamp-agent`.
    pub agent: PathBuf,
    /// `kubelet-sim`.
    pub kubelet_sim: PathBuf,
    /// `metadata-sim` (a cloud's instance metadata service).
    pub metadata_sim: PathBuf,
}

/// One needed binary: its package and the source files and directories it is
/// built from (`!dir` leaves a directory out). Cargo relinks a binary only
/// when something it depends on changed, so the root manifest and the lock
/// file are not listed: touching them need not relink anything.
struct Needed {
    package: &'static str,
    bin: &'static str,
    sources: &'static [&'static str],
}

const NEEDED: [Needed; 4] = [
    Needed {
        package: "rubber-stamp-approver",
        bin: "rubber-stamp-approver",
        sources: &["approver/src", "approver/Cargo.toml", "proto", "listen"],
    },
    Needed {
        package: "rubber-stamp-agent",
        bin: "rubber-stamp-agent",
        sources: &["agent/src", "agent/Cargo.toml", "proto", "listen"],
    },
    Needed {
        package: "rubber-stamp-kubelet-sim",
        bin: "kubelet-sim",
        sources: &["testbed/kubelet/src", "testbed/kubelet/Cargo.toml"],
    },
    Needed {
        package: "rubber-stamp-metadata-sim",
        bin: "metadata-sim",
        sources: &["testbed/metadata/src", "testbed/metadata/Cargo.toml"],
    },
];

/// Where the running executable's profile puts binaries.
#[derive(Debug)]
struct ProfileDir {
    /// `target/<profile>`.
    bin_dir: PathBuf,
    /// `target`.
    target_dir: PathBuf,
    /// Cargo's profile flag for that directory.
    profile_args: Vec<String>,
}

impl Binaries {
    /// The binaries of the running executable's profile: used where they are
    /// when present and newer than their sources, built with cargo otherwise
    /// (see the module docs). `say` hears what is being built.
    pub fn find(say: impl Fn(&str)) -> Result<Self, BinariesError> {
        let profile = ProfileDir::of_current_exe()?;
        let workspace = Path::new(WORKSPACE);
        let outdated: Vec<String> = NEEDED
            .iter()
            .filter_map(|n| {
                let path = profile.bin_dir.join(n.bin);
                why_unusable(&path, workspace, n.sources).map(|why| format!("{} {why}", n.bin))
            })
            .collect();
        if !outdated.is_empty() {
            let command = profile.build_command(workspace);
            let shown = display(&command);
            let Some(cargo) = cargo() else {
                return Err(BinariesError::Missing {
                    what: outdated.join("; "),
                    command: shown,
                });
            };
            say(&format!(
                "building {} ({})",
                outdated.join("; "),
                shown.replacen("cargo", &cargo.display().to_string(), 1)
            ));
            let mut build = Command::new(&cargo);
            for (key, _) in std::env::vars_os() {
                if key.to_str().is_some_and(set_by_cargo_for_programs) {
                    build.env_remove(&key);
                }
            }
            build
                .args(command.iter().skip(1))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            let status = build.status().map_err(|source| BinariesError::Spawn {
                command: shown.clone(),
                source,
            })?;
            if !status.success() {
                return Err(BinariesError::Build {
                    command: shown,
                    status,
                });
            }
        }
        let path = |bin: &str| -> Result<PathBuf, BinariesError> {
            let p = profile.bin_dir.join(bin);
            if p.is_file() {
                Ok(p)
            } else {
                Err(BinariesError::Missing {
                    what: format!("{} is missing after the build", p.display()),
                    command: display(&profile.build_command(workspace)),
                })
            }
        };
        Ok(Self {
            approver: path("rubber-stamp-approver")?,
            agent: path("rubber-stamp-agent")?,
            kubelet_sim: path("kubelet-sim")?,
            metadata_sim: path("metadata-sim")?,
        })
    }
}

impl ProfileDir {
    fn of_current_exe() -> Result<Self, BinariesError> {
        let exe = std::env::current_exe().map_err(BinariesError::CurrentExe)?;
        let mut dir = exe
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        // Test and bench executables live in `target/<profile>/deps`.
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let profile_args = match name.as_str() {
            "debug" => Vec::new(),
            "release" => vec!["--release".to_owned()],
            other => vec!["--profile".to_owned(), other.to_owned()],
        };
        let target_dir = dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("target"));
        Ok(Self {
            bin_dir: dir,
            target_dir,
            profile_args,
        })
    }

    /// `cargo build …` of exactly the needed binaries into this directory.
    fn build_command(&self, workspace: &Path) -> Vec<String> {
        let mut args = vec!["cargo".to_owned(), "build".to_owned()];
        args.extend(self.profile_args.iter().cloned());
        args.push("--manifest-path".to_owned());
        args.push(normalise(&workspace.join("Cargo.toml")));
        args.push("--target-dir".to_owned());
        args.push(normalise(&self.target_dir));
        for n in &NEEDED {
            args.extend(["-p".to_owned(), n.package.to_owned()]);
        }
        for n in &NEEDED {
            args.extend(["--bin".to_owned(), n.bin.to_owned()]);
        }
        args
    }
}

/// Whether `key` is one of the variables cargo sets for the program it runs
/// (`cargo run`, `cargo test`). They must not reach a nested `cargo build`:
/// build scripts that watch them (ring's does, with `rerun-if-env-changed`)
/// would see them change and rebuild half the dependency tree, and again at
/// the next ordinary build.
fn set_by_cargo_for_programs(key: &str) -> bool {
    const PREFIXES: [&str; 6] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_",
        "CARGO_RUSTC_",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p)) || matches!(key, "OUT_DIR" | "CARGO_TARGET_TMPDIR")
}

/// Cargo: `CARGO` as set by `cargo run`/`cargo test`, else the cargo that
/// built this crate if it still exists.
fn cargo() -> Option<PathBuf> {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(env!("CARGO"))))
        .filter(|p| p.is_file())
}

/// `None` when `binary` exists and is newer than every file under `sources`
/// (relative to `workspace`); otherwise why not. Without the source tree
/// (the binary was copied elsewhere) an existing binary is used.
fn why_unusable(binary: &Path, workspace: &Path, sources: &[&str]) -> Option<String> {
    let built = match std::fs::metadata(binary).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(_) => return Some(format!("is missing ({})", binary.display())),
    };
    let skip: Vec<PathBuf> = sources
        .iter()
        .filter_map(|s| s.strip_prefix('!'))
        .map(|s| workspace.join(s))
        .collect();
    let newest = sources
        .iter()
        .filter(|s| !s.starts_with('!'))
        .filter_map(|s| newest_mtime(&workspace.join(s), &skip))
        .max()?;
    (newest > built).then(|| format!("is older than its sources ({})", binary.display()))
}

/// The newest modification time of a file or of any file under a directory,
/// leaving out the directories in `skip`.
fn newest_mtime(path: &Path, skip: &[PathBuf]) -> Option<SystemTime> {
    if skip.iter().any(|s| s == path) {
        return None;
    }
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|entry| newest_mtime(&entry.path(), skip))
        .max()
}

fn normalise(path: &Path) -> String {
    path.canonicalize()
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn display(command: &[String]) -> String {
    command.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_cargo_sets_for_programs_are_recognised() {
        for key in [
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "OUT_DIR",
            "CARGO_BIN_EXE_x",
        ] {
            assert!(set_by_cargo_for_programs(key), "{key}");
        }
        for key in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO",
            "PATH",
        ] {
            assert!(!set_by_cargo_for_programs(key), "{key}");
        }
    }

    #[test]
    fn a_binary_older_than_its_sources_is_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("crate/src");
        std::fs::create_dir_all(&src).expect("mkdir");
        let bin = dir.path().join("bin");
        assert!(
            why_unusable(&bin, dir.path(), &["crate/src"]).is_some_and(|w| w.contains("missing"))
        );
        std::fs::write(&bin, b"").expect("write");
        std::fs::write(src.join("lib.rs"), b"").expect("write");
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&bin)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
        assert!(
            why_unusable(&bin, dir.path(), &["crate/src"]).is_some_and(|w| w.contains("older"))
        );
        let new = SystemTime::now() + std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&bin)
            .and_then(|f| f.set_modified(new))
            .expect("set mtime");
        assert_eq!(why_unusable(&bin, dir.path(), &["crate/src"]), None);
        // A left-out directory does not count.
        let other = src.join("bin");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::fs::write(other.join("other.rs"), b"").expect("write");
        std::fs::File::options()
            .write(true)
            .open(other.join("other.rs"))
            .and_then(|f| f.set_modified(new + std::time::Duration::from_secs(60)))
            .expect("set mtime");
        assert_eq!(
            why_unusable(&bin, dir.path(), &["crate/src", "!crate/src/bin"]),
            None
        );
        assert!(why_unusable(&bin, dir.path(), &["crate/src"]).is_some());
    }
}
