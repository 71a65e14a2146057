//! `docs/configuration.md` is generated from the binaries' own flag definitions (what
//! `--help` prints) and the policy's fields, between `<!-- BEGIN GENERATED name -->` and
//! `<!-- END GENERATED name -->` markers; this test regenerates those blocks and fails when
//! the file differs. `UPDATE_DOCS=1` rewrites the file instead.

use std::collections::BTreeSet;

use clap::CommandFactory as _;
use rubber_stamp_core::Policy;
use rubber_stamp_e2e::deploy;
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Width `--help` is rendered at, so the doc does not depend on a terminal.
const WIDTH: usize = 100;

/// The command with environment values hidden (so the variables set where the test runs
/// do not leak into the doc) and a fixed width.
fn stable(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.term_width(WIDTH).mut_args(|a| a.hide_env_values(true));
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names.iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, |s| {
            s.term_width(WIDTH).mut_args(|a| a.hide_env_values(true))
        })
    })
}

/// What `<argv> --help` prints.
fn help(cmd: clap::Command, argv: &[&str]) -> Result<String, String> {
    let args = argv.iter().copied().chain(["--help"]);
    match stable(cmd).try_get_matches_from(args) {
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => Ok(e
            .render()
            .to_string()
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_owned()),
        other => Err(format!("{argv:?} --help did not print help: {other:?}")),
    }
}

fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// One table row per flag: flag, environment variable, default, what it does.
fn flag_table(cmd: &clap::Command) -> String {
    let mut out =
        String::from("| flag | environment | default | description |\n|---|---|---|---|\n");
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let mut flag = match (arg.get_short(), arg.get_long()) {
            (Some(s), Some(l)) => format!("`-{s}`, `--{l}`"),
            (None, Some(l)) => format!("`--{l}`"),
            (Some(s), None) => format!("`-{s}`"),
            (None, None) => format!("`<{id}>`"),
        };
        for alias in arg.get_visible_aliases().into_iter().flatten() {
            flag.push_str(&format!(", `--{alias}`"));
        }
        if arg.is_required_set() {
            flag.push_str(" (required)");
        }
        let env = arg
            .get_env()
            .and_then(|e| e.to_str())
            .map_or_else(|| "—".to_owned(), |e| format!("`{e}`"));
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .filter_map(|v| v.to_str().map(|v| format!("`{v}`")))
            .collect();
        let default = if defaults.is_empty() {
            "—".to_owned()
        } else {
            defaults.join(", ")
        };
        let mut description = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !values.is_empty() {
            if !description.trim_end().ends_with('.') {
                description.push('.');
            }
            description.push_str(&format!(" One of {}.", values.join(", ")));
        }
        out.push_str(&format!(
            "| {flag} | {env} | {default} | {} |\n",
            cell(&description)
        ));
    }
    out
}

fn command_block(cmd: clap::Command, argv: &[&str], sub: Option<&str>) -> Result<String, String> {
    let text = help(cmd.clone(), argv)?;
    let cmd = match sub {
        Some(name) => cmd
            .find_subcommand(name)
            .cloned()
            .ok_or(format!("no subcommand {name}"))?,
        None => cmd,
    };
    Ok(format!(
        "{}\n<details><summary><code>{} --help</code></summary>\n\n```text\n{text}\n```\n\n</details>\n",
        flag_table(&cmd),
        argv.join(" ")
    ))
}

/// `## \`field\`` sections of docs/policy.md: (field, first sentence).
fn policy_sections(policy_md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = policy_md.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(field) = line.strip_prefix("## `").and_then(|l| l.strip_suffix('`')) else {
            continue;
        };
        let mut paragraph = String::new();
        for l in lines.by_ref() {
            if l.trim().is_empty() {
                if paragraph.is_empty() {
                    continue;
                }
                break;
            }
            paragraph.push_str(l.trim());
            paragraph.push(' ');
        }
        let sentence = paragraph
            .split_inclusive(". ")
            .next()
            .unwrap_or(&paragraph)
            .trim()
            .to_owned();
        out.push((field.to_owned(), sentence));
    }
    out
}

fn policy_table(policy_md: &str) -> Result<String, String> {
    let defaults = serde_json::to_value(Policy::default()).map_err(|e| e.to_string())?;
    let every = serde_json::to_value(Policy {
        max_expiration_seconds: 600,
        ..Policy::default()
    })
    .map_err(|e| e.to_string())?;
    let fields: BTreeSet<String> = every
        .as_object()
        .ok_or("policy is not an object")?
        .keys()
        .cloned()
        .collect();
    let sections = policy_sections(policy_md);
    let documented: BTreeSet<String> = sections.iter().map(|(f, _)| f.clone()).collect();
    if documented != fields {
        return Err(format!(
            "docs/policy.md documents {documented:?} but the policy has {fields:?}"
        ));
    }
    let mut out = String::from("| field | default | meaning |\n|---|---|---|\n");
    for (field, sentence) in sections {
        let default = match defaults.get(&field) {
            None | Some(Value::Null) => "none".to_owned(),
            Some(Value::Array(items)) if items.len() > 4 => {
                format!("{} entries (see policy.md)", items.len())
            }
            Some(value) => format!("`{value}`"),
        };
        let anchor = field.to_ascii_lowercase();
        out.push_str(&format!(
            "| [`{field}`](policy.md#{anchor}) | {default} | {} |\n",
            cell(&sentence)
        ));
    }
    Ok(out)
}

/// Every generated block, by name.
fn blocks() -> Result<Vec<(&'static str, String)>, String> {
    let approver = rubber_stamp_approver::flags::Cli::command();
    let agent = rubber_stamp_agent::config::AgentArgs::command().name("rubber-stamp-agent");
    let policy_md = std::fs::read_to_string(deploy::repo_root().join("docs/policy.md"))
        .map_err(|e| e.to_string())?;
    Ok(vec![
        (
            "approver-run",
            command_block(
                approver.clone(),
                &["rubber-stamp-approver", "run"],
                Some("run"),
            )?,
        ),
        (
            "approver-check",
            command_block(approver, &["rubber-stamp-approver", "check"], Some("check"))?,
        ),
        (
            "agent",
            command_block(agent, &["rubber-stamp-agent"], None)?,
        ),
        ("policy", policy_table(&policy_md)?),
    ])
}

/// `doc` with every generated block replaced.
fn regenerate(doc: &str) -> Result<String, String> {
    let mut out = doc.to_owned();
    for (name, body) in blocks()? {
        let begin = format!("<!-- BEGIN GENERATED {name} -->\n");
        let end = format!("<!-- END GENERATED {name} -->");
        let start = out
            .find(&begin)
            .ok_or(format!("docs/configuration.md has no {begin:?}"))?
            + begin.len();
        let stop = out[start..]
            .find(&end)
            .ok_or(format!("docs/configuration.md has no {end:?}"))?
            + start;
        out.replace_range(start..stop, &body);
    }
    Ok(out)
}

#[test]
fn configuration_doc_matches_the_binaries() -> TestResult {
    let path = deploy::repo_root().join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path)?;
    let fresh = regenerate(&doc)?;
    if std::env::var("UPDATE_DOCS").as_deref() == Ok("1") {
        if fresh != doc {
            std::fs::write(&path, &fresh)?;
            eprintln!("rewrote {}", path.display());
        }
        return Ok(());
    }
    if fresh != doc {
        let first = doc
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(doc.lines().count().min(fresh.lines().count()));
        return Err(format!(
            "docs/configuration.md is out of date (first difference at line {}): run \
             UPDATE_DOCS=1 cargo test -p rubber-stamp-e2e --test deploy configuration",
            first + 1
        )
        .into());
    }
    Ok(())
}

#[test]
fn every_flag_and_variable_is_in_the_doc() -> TestResult {
    let doc = std::fs::read_to_string(deploy::repo_root().join("docs/configuration.md"))?;
    let approver = rubber_stamp_approver::flags::Cli::command();
    let agent = rubber_stamp_agent::config::AgentArgs::command();
    let commands = [
        approver.find_subcommand("run").ok_or("run")?,
        approver.find_subcommand("check").ok_or("check")?,
        &agent,
    ];
    for cmd in commands {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long().filter(|l| *l != "help" && *l != "version") {
                assert!(
                    doc.contains(&format!("`--{long}`")),
                    "--{long} is not documented"
                );
            }
            if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                assert!(doc.contains(&format!("`{env}`")), "{env} is not documented");
            }
        }
    }
    Ok(())
}
