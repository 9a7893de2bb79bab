//! The layering docs/ARCHITECTURE.md describes, checked on the source: the
//! graph of top-level modules (an edge for every `crate::NAME` a module's
//! non-test code names) has no cycle, the store names nothing of the layers
//! above it, and the policy rules stand on `error` alone. A change that
//! makes the store reach up into the catalog (as its leases once did for a
//! clock) fails here with the cycle named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file below `dir`, test-only files aside (`tests.rs`, files
/// under a `tests/` directory, `testkit.rs`).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry of src/").path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name != "tests" {
                sources(&p, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && name != "testkit.rs" {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs and
/// main.rs, which name every module).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let m = first.strip_suffix(".rs").unwrap_or(first);
    (m != "lib" && m != "main").then(|| m.to_string())
}

/// The code of a file that is not a test: up to its `#[cfg(test)] mod …`
/// block (test modules close their files), without comment lines.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if t.starts_with("#[cfg(test)]") {
            let next = lines.peek().map(|n| n.trim_start()).unwrap_or("");
            if next.starts_with("mod ") || next.starts_with("pub mod ") {
                break;
            }
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The top-level modules `code` names as `crate::NAME`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        // `$crate::` and a longer path ending in `crate` are not ours.
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let name: String = code[i + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut g = Graph::new();
    for f in files {
        let Some(me) = top_module(&src, &f) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let deps = g.entry(me.clone()).or_default();
        for m in named_modules(&code(&text)) {
            if m != me && m != "testkit" {
                deps.insert(m);
            }
        }
    }
    g
}

/// A cycle through `start`, if there is one (depth-first, path kept).
fn cycle_from(g: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &Graph,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    walk(g, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    assert!(
        g.contains_key("store") && g.contains_key("engine"),
        "src/ read: {g:?}"
    );
    for m in g.keys() {
        if let Some(c) = cycle_from(&g, m) {
            panic!("modules in a cycle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_store_names_no_layer_above_it() {
    let g = graph();
    let above = [
        "catalog", "cli", "engine", "fuse", "model", "policy", "tasks", "vfs",
    ];
    let store = &g["store"];
    let bad: Vec<_> = above.iter().filter(|m| store.contains(**m)).collect();
    assert!(
        bad.is_empty(),
        "store names {bad:?} (all it names: {store:?})"
    );
}

#[test]
fn the_policy_rules_stand_on_error_alone() {
    let g = graph();
    let policy: Vec<_> = g["policy"].iter().collect();
    assert_eq!(policy, ["error"], "policy names {policy:?}");
}

#[test]
fn the_checker_sees_a_cycle_and_skips_tests_and_comments() {
    let text = "use crate::a::X;\n// crate::b in a comment\nfn f() { $crate::c; my_crate::d; }\n#[cfg(test)]\nmod tests {\n use crate::e;\n}\n";
    let names: Vec<_> = named_modules(&code(text)).into_iter().collect();
    assert_eq!(names, ["a"]);
    let mut g = Graph::new();
    g.entry("x".into()).or_default().insert("y".into());
    g.entry("y".into()).or_default().insert("z".into());
    assert_eq!(cycle_from(&g, "x"), None);
    g.entry("z".into()).or_default().insert("x".into());
    assert_eq!(
        cycle_from(&g, "x").map(|c| c.join(">")).as_deref(),
        Some("x>y>z>x")
    );
}
