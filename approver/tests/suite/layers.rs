//! The layers stay layers: within each product crate, no top-level module imports another
//! that imports it back (directly or through others). Crate boundaries keep the decision
//! core free of Kubernetes and gRPC; this keeps the approver's and the agent's modules from
//! growing loops again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for the crate root files).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (!["lib", "main"].contains(&name.as_str())).then_some(name)
}

/// The top-level modules `text` names: `crate::a`, `crate::{a, b::c}`, and — in a file
/// whose parent is the crate root (`src/x.rs`, `src/x/mod.rs`) — `super::a`.
fn named_modules(text: &str, super_is_crate: bool) -> BTreeSet<String> {
    let mut prefixes = vec!["crate::"];
    if super_is_crate {
        prefixes.push("super::");
    }
    let ident = |t: &str| -> String {
        t.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for prefix in prefixes {
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // The group's items at depth 0: `a`, `b::c`, `self`.
                let mut depth = 0usize;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            found.insert(ident(&item));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        item.push(c);
                    }
                }
                found.insert(ident(&item));
            } else {
                found.insert(ident(rest));
            }
        }
    }
    found
}

/// Which top-level modules each top-level module names, outside comments and tests.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("source");
        // Unit tests may reach anywhere; only product code counts.
        let product = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String = product
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let parent = file.parent().unwrap_or(src);
        let super_is_crate = parent == src || file.file_name().is_some_and(|n| n == "mod.rs");
        let edges = graph.entry(from.clone()).or_default();
        for to in named_modules(&code, super_is_crate) {
            if to != from && modules.contains(&to) {
                edges.insert(to);
            }
        }
    }
    graph
}

#[test]
fn imports_are_read_in_every_spelling() {
    let text =
        "use crate::a::X;\nuse crate::{b, c::{D, E}, self};\nuse super::f;\nx = crate::g(1);";
    let names = |s| named_modules(text, s).into_iter().collect::<Vec<_>>();
    assert_eq!(names(true), ["a", "b", "c", "f", "g", "self"]);
    assert_eq!(names(false), ["a", "b", "c", "g", "self"]);
}

/// A cycle of the graph, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        cycle(&graph).map(|c| c.join(" -> ")),
        Some("a -> b -> c -> a".to_owned())
    );
}

#[test]
fn no_product_module_imports_a_module_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["approver", "agent", "core", "proto", "listen"] {
        let graph = module_graph(&root.join(krate).join("src"));
        assert!(
            graph.len() >= 2 || krate == "proto",
            "{krate}: only {} modules found",
            graph.len()
        );
        if let Some(found) = cycle(&graph) {
            panic!(
                "{krate}: modules import each other in a loop: {}",
                found.join(" -> ")
            );
        }
    }
}

#[test]
fn no_testbed_module_imports_a_module_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in [
        "testbed/kit",
        "testbed/apiserver",
        "testbed/hosts",
        "testbed/kubelet",
        "testbed/sandbox",
        "e2e",
    ] {
        let graph = module_graph(&root.join(krate).join("src"));
        assert!(
            graph.len() >= 2,
            "{krate}: only {} modules found",
            graph.len()
        );
        if let Some(found) = cycle(&graph) {
            panic!(
                "{krate}: modules import each other in a loop: {}",
                found.join(" -> ")
            );
        }
    }
}
