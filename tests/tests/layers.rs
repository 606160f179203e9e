//! The host's dependencies point one way: every module uses only modules `host/src/lib.rs` lists below it, no module graph cycle exists file by file, and no file outgrows 800 lines.
//!
//! Edges are read from the source the way a reader would: `crate::a::b` paths, `super::` paths
//! and a module's paths into its own children (`mod x;` then `x::...`, re-exports included),
//! in code, not comments, and not in test modules. Run it alone with
//! `cargo nextest run -p belfry-tests --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a host source file may grow; past it, split it by responsibility.
const MAX_LINES: usize = 800;

/// The host's sources, and its domain core's (a crate of its own whose modules the host
/// re-exports under the same names, so that `crate::alert` is one module in both).
fn source_roots() -> [PathBuf; 2] {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    [repository.join("host/src"), repository.join("host/core/src")]
}

/// Every source file of the host library and its core as (module path, text), test-only files
/// and the core's `lib.rs` (its module list) left out.
fn modules() -> BTreeMap<String, String> {
    source_roots().iter().flat_map(|root| modules_under(root, root.ends_with("core/src"))).collect()
}

fn modules_under(root: &Path, core: bool) -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files
        .into_iter()
        .filter(|f| {
            f.file_name().is_some_and(|n| n != "tests.rs" && n != "main.rs" && !(core && n == "lib.rs" && f.parent() == Some(root)))
        })
        .map(|f| {
            let relative = f.strip_prefix(root).unwrap().with_extension("");
            let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).filter(|p| p != "mod").collect();
            let module = if parts == ["lib"] { "crate".to_string() } else { parts.join("::") };
            (module, std::fs::read_to_string(&f).unwrap())
        })
        .collect()
}

/// The code of a file: without comment lines and without its `#[cfg(test)] mod tests { ... }`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The identifier paths in `code` that start with `prefix` (`crate::`, `super::`, `x::`),
/// as the segments after it.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(at) = code[from..].find(prefix) {
        let start = from + at;
        from = start + prefix.len();
        // A whole path segment: not the tail of another identifier or path.
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_' || bytes[start - 1] == b':') {
            continue;
        }
        let rest = &code[from..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        let segments: Vec<String> = rest[..end].split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
        found.push(segments);
    }
    found
}

/// Every edge `module -> module it uses` in the host.
fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    // The longest module path among `segments`' prefixes.
    let resolve = |segments: &[String]| -> Option<String> {
        (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|m| modules.contains_key(m))
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in modules {
        let code = code(text);
        let own: Vec<String> = if module == "crate" { Vec::new() } else { module.split("::").map(str::to_string).collect() };
        let mut uses = BTreeSet::new();
        for path in paths_after(&code, "crate::") {
            uses.extend(resolve(&path));
        }
        for path in paths_after(&code, "super::") {
            // `super::super::x`: one level up per `super`.
            let ups = 1 + path.iter().take_while(|s| *s == "super").count();
            let mut full: Vec<String> = own[..own.len().saturating_sub(ups)].to_vec();
            full.extend(path.into_iter().skip_while(|s| s == "super"));
            uses.extend(resolve(&full).or_else(|| (!full.is_empty()).then(|| full.join("::"))));
        }
        for line in code.lines() {
            let declared = line.trim().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
            let Some(child) = declared.strip_prefix("mod ").and_then(|c| c.strip_suffix(';')) else { continue };
            let mut base = own.clone();
            base.push(child.to_string());
            for prefix in [format!("{child}::"), format!("self::{child}::")] {
                for path in paths_after(&code, &prefix) {
                    let mut full = base.clone();
                    full.extend(path);
                    uses.extend(resolve(&full));
                }
            }
        }
        uses.retain(|u| u != module && !module.starts_with(&format!("{u}::")) && u != "crate");
        edges.insert(module.clone(), uses);
    }
    edges
}

/// A cycle in `edges`, as the modules along it, if there is one.
fn a_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

/// The top-level modules in the order `lib.rs`'s layout lists them, top layer first.
fn layers(lib: &str) -> Vec<String> {
    let layout = lib.split("//! # Layout").nth(1).expect("lib.rs has a `# Layout` section");
    let mut order = Vec::new();
    for line in layout.lines().skip(1).take_while(|l| l.starts_with("//!")) {
        let Some(item) = line.strip_prefix("//! - ") else { continue };
        let names = item.split(':').next().unwrap_or("");
        order.extend(names.split(',').map(|n| n.trim().trim_matches(['[', ']', '`']).to_string()).filter(|n| !n.is_empty()));
    }
    order
}

#[test]
fn the_module_graph_has_no_cycle() {
    let modules = modules();
    let edges = edges(&modules);
    assert!(edges.len() > 40, "the host's modules were found: {:?}", edges.keys());
    if let Some(cycle) = a_cycle(&edges) {
        panic!("a dependency cycle: {} (make one of them stop using the other: move what both need below both)", cycle.join(" -> "));
    }
}

#[test]
fn every_module_uses_only_modules_lib_rs_lists_below_it() {
    let modules = modules();
    let order = layers(&modules["crate"]);
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let declared: BTreeSet<String> = modules.keys().filter(|m| *m != "crate").map(|m| top(m)).collect();
    let listed: BTreeSet<String> = order.iter().cloned().collect();
    assert_eq!(listed, declared, "host/src/lib.rs's layout lists every top-level module once");
    assert_eq!(order.len(), listed.len(), "a module listed twice in lib.rs: {order:?}");
    let rank = |m: &str| order.iter().position(|o| *o == top(m)).unwrap();
    let mut upward = Vec::new();
    for (from, uses) in edges(&modules) {
        if from == "crate" {
            continue;
        }
        for to in uses.iter().filter(|to| top(to) != top(&from) && rank(to) < rank(&from)) {
            upward.push(format!("{from} -> {to}"));
        }
    }
    assert!(
        upward.is_empty(),
        "uses of a module lib.rs lists above (reorder the layout, or invert the dependency):\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_host_file_outgrows_its_room() {
    let mut long = Vec::new();
    for (module, text) in modules() {
        let lines = text.lines().count();
        if lines > MAX_LINES {
            long.push(format!("{module}: {lines} lines"));
        }
    }
    assert!(long.is_empty(), "files over {MAX_LINES} lines in the host; split each by responsibility:\n{}", long.join("\n"));
}

#[test]
fn the_check_sees_a_cycle_and_an_upward_use() {
    // The reader of sources finds what a cycle is made of, so the tests above can fail.
    let mut fake = BTreeMap::new();
    fake.insert("crate".to_string(), "//! # Layout\n//!\n//! - [`b`]: top.\n//! - [`a`]: bottom.\n".to_string());
    fake.insert("a".to_string(), "use crate::b::Thing;\n// crate::c in a comment is no use\n".to_string());
    fake.insert("b".to_string(), "mod part;\npub use part::Item;\n".to_string());
    fake.insert("b::part".to_string(), "use super::super::a::Other;\n".to_string());
    let edges = edges(&fake);
    assert_eq!(edges["a"], BTreeSet::from(["b".to_string()]));
    assert_eq!(edges["b"], BTreeSet::from(["b::part".to_string()]));
    assert_eq!(edges["b::part"], BTreeSet::from(["a".to_string()]));
    assert_eq!(a_cycle(&edges).unwrap().len(), 4, "a -> b -> b::part -> a");
    assert_eq!(layers(&fake["crate"]), ["b", "a"]);
}
