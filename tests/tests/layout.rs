//! The module layout of `tenancy-sea`, pinned: no source file above 500 lines, the
//! top-level modules in layers that depend only downwards (no cycle), and a `lib.rs` that
//! only declares modules and re-exports.
//!
//! The module graph is read from the text: a file of top-level module `a` that names
//! `crate::b` or `$crate::b` (in code, a macro or a doc link alike) makes the edge `a → b`.
//! Doc links name the root re-export (`crate::Y`) instead, which makes no edge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The most lines a source file may have, tests included.
const MAX_LINES: usize = 500;

/// The top-level modules, lowest layer first: each may use only those before it.
const LAYERS: [&str; 17] = [
    "error",
    "redact",
    "entity",
    "scope",
    "query",
    "shard",
    "handle",
    "placement",
    "isolation",
    "citus",
    "catalog",
    "tenancy",
    "admin",
    "task",
    "web",
    "renamed",
    "cli",
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tenancy-sea/src")
}

/// Every `.rs` file under `dir`, with its path relative to the source directory.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let relative = path
                .strip_prefix(src_dir())
                .expect("a file under the source directory")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((relative, text));
        }
    }
}

fn all_sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    sources(&src_dir(), &mut out);
    assert!(
        out.iter().any(|(path, _)| path == "lib.rs"),
        "no lib.rs found under {}",
        src_dir().display()
    );
    out
}

/// The top-level module a file belongs to: `error.rs` → `error`, `shard/merge.rs` → `shard`.
fn top_module(path: &str) -> &str {
    let first = path.split('/').next().unwrap_or(path);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The names following each `crate::` (and `$crate::`) in `text`.
fn crate_references(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(at) = rest.find("crate::") {
        let start = offset + at;
        let before = text[..start].chars().next_back();
        let after = &text[start + "crate::".len()..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && name_len > 0 {
            found.push(&after[..name_len]);
        }
        offset = start + "crate::".len();
        rest = &text[offset..];
    }
    found
}

#[test]
fn no_source_file_is_over_500_lines() {
    let long: Vec<String> = all_sources()
        .iter()
        .map(|(path, text)| (path, text.lines().count()))
        .filter(|(_, lines)| *lines > MAX_LINES)
        .map(|(path, lines)| format!("tenancy-sea/src/{path}: {lines} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines (split them by concern):\n  {}",
        long.join("\n  ")
    );
}

/// The edges between top-level modules, each with the files that make it.
fn module_graph(files: &[(String, String)]) -> BTreeMap<(String, String), Vec<String>> {
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (path, text) in files {
        let from = top_module(path);
        if from == "lib" {
            continue;
        }
        for to in crate_references(text) {
            if to != from && LAYERS.contains(&to) {
                let files = edges.entry((from.to_owned(), to.to_owned())).or_default();
                if !files.contains(path) {
                    files.push(path.clone());
                }
            }
        }
    }
    edges
}

/// A cycle of the graph, as the modules along it (the first repeated at the end).
fn find_cycle(edges: &BTreeMap<(String, String), Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<(String, String), Vec<String>>,
        done: &mut Vec<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.iter().any(|n| n == node) {
            return None;
        }
        path.push(node.to_owned());
        for (from, to) in edges.keys() {
            if from == node
                && let Some(cycle) = visit(to, edges, done, path)
            {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(node.to_owned());
        None
    }
    let mut done = Vec::new();
    for module in LAYERS {
        if let Some(cycle) = visit(module, edges, &mut done, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn top_level_modules_depend_in_one_direction() {
    let files = all_sources();
    let unknown: Vec<&str> = files
        .iter()
        .map(|(path, _)| top_module(path))
        .filter(|module| *module != "lib" && !LAYERS.contains(module))
        .collect();
    assert!(
        unknown.is_empty(),
        "top-level modules not in the layout test's LAYERS (add them at their layer): {unknown:?}"
    );

    let edges = module_graph(&files);
    if let Some(cycle) = find_cycle(&edges) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let files = &edges[&(pair[0].clone(), pair[1].clone())];
                format!("{} → {} (in {})", pair[0], pair[1], files.join(", "))
            })
            .collect();
        panic!(
            "the top-level modules of tenancy-sea have a cycle: {}\n  {}",
            cycle.join(" → "),
            steps.join("\n  ")
        );
    }

    let rank = |module: &str| LAYERS.iter().position(|m| *m == module);
    let upward: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| rank(to) > rank(from))
        .map(|((from, to), files)| {
            format!("{from} uses {to}, a higher layer (in {})", files.join(", "))
        })
        .collect();
    assert!(
        upward.is_empty(),
        "modules depend upwards; the layers, lowest first, are {}:\n  {}",
        LAYERS.join(" → "),
        upward.join("\n  ")
    );
}

#[test]
fn lib_rs_only_declares_and_reexports() {
    let files = all_sources();
    let lib = &files
        .iter()
        .find(|(path, _)| path == "lib.rs")
        .expect("lib.rs")
        .1;
    let mut defined = Vec::new();
    // `Some(block)` inside `pub mod prelude` or `pub mod __private`; `true` inside a
    // `pub use` that spans lines.
    let mut block: Option<&str> = None;
    let mut in_use = false;
    for (n, line) in lib.lines().enumerate() {
        let mut line = line.trim();
        // An attribute on a line of its own, or before an item on the same line.
        while line.starts_with("#[")
            && let Some(end) = line.find(']')
        {
            line = line[end + 1..].trim_start();
        }
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        if in_use {
            in_use = !line.ends_with(';');
            continue;
        }
        if let Some(name) = block {
            if line == "}" {
                block = None;
            } else if line.starts_with("pub use ") {
                in_use = !line.ends_with(';');
            } else {
                defined.push(format!("line {}: `{line}` in `{name}`", n + 1));
            }
            continue;
        }
        let is_mod = ["mod ", "pub mod ", "pub(crate) mod "]
            .iter()
            .any(|start| line.starts_with(start) && line.ends_with(';'));
        if is_mod {
            continue;
        }
        if line.starts_with("pub use ") {
            in_use = !line.ends_with(';');
            continue;
        }
        if let Some(name) = ["prelude", "__private"]
            .into_iter()
            .find(|name| line == format!("pub mod {name} {{"))
        {
            block = Some(name);
            continue;
        }
        defined.push(format!("line {}: `{line}`", n + 1));
    }
    assert!(
        defined.is_empty(),
        "lib.rs holds only the crate docs, `mod` declarations, `pub use` re-exports, the \
         prelude and `__private`; move these items into a module:\n  {}",
        defined.join("\n  ")
    );
}
