//! The broker's modules form layers: a module imports only modules listed
//! before it in [`LAYERS`], never one after it, so the import graph of
//! `broker/src` has no cycle (the order is the module map of `lib.rs` and
//! of `docs/ARCHITECTURE.md`).
//!
//! How it is checked: every non-test source file of `broker/src` is read,
//! comments and string literals are blanked, and each `crate::<module>`
//! path (also inside `use crate::{a, b::c}` groups) is an import of that
//! top-level module by the file's top-level module. Submodules of one
//! top-level module (`session/*.rs`) may use each other and their parent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules of `broker/src`, lowest first.
const LAYERS: &[&str] = &[
    "codec",
    // the `[[routes]]` keys, which `config` holds; the rest of the hub is
    // below `state`, which holds it
    "hub::config",
    "config",
    "counters",
    "message",
    "router",
    "auth",
    "limits",
    "retain",
    "telemetry",
    "acl",
    "transport",
    "enhanced_auth",
    "handle",
    "nodes",
    "records",
    "registry",
    "group_copies",
    "hub",
    "state",
    "fanout",
    "cluster_bridge",
    "observe",
    "session",
    "http",
    "listener",
    "restore",
    "drain",
    "server",
];

/// `src` with `//` comments, `/* */` comments and string and char
/// literals replaced by spaces (so a path in a doc comment or a message is
/// not an import).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                out.push(b' ');
                i += 1;
            }
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    out.push(b' ');
                    i += 1;
                }
                out.push(b' ');
                i += 1;
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // a char literal ('a', '\n'); a lifetime has no closing quote
            let end = b[i + 1..]
                .iter()
                .position(|c| *c == b'\'')
                .map_or(b.len(), |p| i + 2 + p);
            out.extend(std::iter::repeat_n(b' ', end - i));
            i = end;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code` names through `crate::`.
fn imports(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // use crate::{a, b::{c, d}, e}: the names at depth 1
            let mut depth = 1;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start = true,
                    c if start && (c.is_ascii_alphabetic() || c == '_') => {
                        found.push(ident(&group[i..]).to_owned());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(split_module(rest));
        }
    }
    found
}

/// `a` of `a::b::..`, or `a::b` when LAYERS ranks that submodule on its
/// own (`hub::config`).
fn split_module(path: &str) -> String {
    let top = ident(path);
    if let Some(sub) = path[top.len()..].strip_prefix("::") {
        let name = format!("{top}::{}", ident(sub));
        if LAYERS.contains(&name.as_str()) {
            return name;
        }
    }
    top.to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("broker/src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "tests") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// For each top-level module: the modules it imports, with a file that
/// does.
fn import_graph() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_owned())
            .expect("a file name");
        // a submodule LAYERS ranks on its own (`hub/config.rs`)
        let sub = rel
            .to_str()
            .map(|p| p.trim_end_matches(".rs").replace('/', "::"))
            .filter(|p| LAYERS.contains(&p.as_str()));
        let top = sub.unwrap_or(top);
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source is UTF-8");
        // unit tests may reach anything
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let edges = graph.entry(top.clone()).or_default();
        for module in imports(&code_only(text)) {
            // a module may use its own submodules; a submodule ranked on
            // its own is checked like any module
            if module != top && !module.starts_with(&format!("{top}::")) {
                edges.entry(module).or_insert_with(|| rel.to_path_buf());
            }
        }
    }
    graph
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let graph = import_graph();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut violations = Vec::new();
    for (module, edges) in &graph {
        let Some(mine) = rank(module) else {
            violations.push(format!(
                "`{module}` is not in LAYERS: add it where it belongs"
            ));
            continue;
        };
        for (imported, file) in edges {
            match rank(imported) {
                Some(theirs) if theirs < mine => {}
                Some(_) => violations.push(format!(
                    "`{module}` imports `{imported}`, which is above it ({})",
                    file.display()
                )),
                None => violations.push(format!(
                    "`{module}` imports `crate::{imported}`, not a module of LAYERS ({})",
                    file.display()
                )),
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    for layer in LAYERS {
        assert!(
            graph.contains_key(*layer),
            "LAYERS names `{layer}`, which broker/src no longer has"
        );
    }
}

/// The checker itself: it finds imports in groups, ignores them in
/// comments and strings, and a cycle cannot pass it.
#[test]
fn the_check_reads_imports_like_the_compiler_does() {
    let code = code_only(
        "use crate::{a, b::{c, d}, e::f};\n\
         // crate::comment\n\
         /* crate::block */\n\
         let s = \"crate::string\";\n\
         let c = '\"'; let l: &'a str = x; crate::g::h();",
    );
    assert_eq!(imports(&code), ["a", "b", "e", "g"]);
    // a submodule LAYERS ranks on its own counts as itself
    let split = code_only("use crate::hub::config::RouteConfig; crate::hub::Hub::new();");
    assert_eq!(imports(&split), ["hub::config", "hub"]);
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m).expect("listed");
    // a cycle needs one edge going up, which the rank comparison refuses
    assert!(rank("session") > rank("state") && rank("server") > rank("session"));
}
