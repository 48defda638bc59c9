//! The structure of runner/src stays as docs/architecture.md draws it: the top-level modules
//! form layers that import only downward (so no import cycle), and no source file grows past
//! 700 lines without its tests. Read from the `crate::` paths of the source itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first, as docs/architecture.md lists them. A module may import only
/// modules of lower layers.
const LAYERS: &[&[&str]] = &[
    &["exit"],
    &["storage", "format"],
    &["spec"],
    &["plan"],
    &["state"],
    &["transform"],
    &["validate", "transformer_server"],
    &["worker"],
    &["kubernetes", "pod"],
    &["run"],
    &["task"],
    &["pipeline"],
    &["schedule"],
    &["demo"],
    &["bench"],
    &["cli"],
];

/// Lines a source file may have before its `#[cfg(test)]` module.
const MAX_LINES: usize = 700;

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runner/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code without its unit tests: everything before `#[cfg(test)]` followed by a
/// module; a file named tests.rs is all tests.
fn code_of(path: &Path) -> Option<String> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return None;
    }
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
        .unwrap_or(lines.len());
    Some(lines[..end].join("\n"))
}

/// The top-level module a file belongs to (`run` for runner/src/run/local.rs).
fn module_of(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap();
    let first = relative.components().next().unwrap();
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// The top-level modules named by `crate::` paths in `code`, `use crate::{a, b::c}` included.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut items = Vec::new();
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        items.push(&group[start..i]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&group[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            items
        } else {
            vec![rest]
        };
        for name in names {
            let name: String = name
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                found.insert(name);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = source_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(&root, f))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&root, file);
        if !modules.contains(&module) {
            continue;
        }
        let Some(code) = code_of(file) else { continue };
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(
            imports(&code, &modules)
                .into_iter()
                .filter(|m| *m != module),
        );
    }
    graph
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// One cycle of `graph`, if it has any (depth-first search for a back edge).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_import_only_lower_layers() {
    let graph = graph();
    let mut problems = Vec::new();
    for (module, imported) in &graph {
        let Some(layer) = layer_of(module) else {
            problems.push(format!(
                "{module} is in no layer: add it to LAYERS and docs/architecture.md"
            ));
            continue;
        };
        for other in imported {
            match layer_of(other) {
                Some(below) if below < layer => {}
                _ => problems.push(format!("{module} imports {other}, which is not below it")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn the_layer_check_sees_imports_and_cycles() {
    let modules: BTreeSet<String> = ["spec", "plan", "state"].map(String::from).into();
    let code = "use crate::{plan::Plan, state::{RunLayout}};\nfn f() { crate::spec::load(); }";
    assert_eq!(imports(code, &modules), modules);
    let cyclic = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(
        find_cycle(&cyclic),
        Some(vec!["a".to_string(), "b".to_string(), "a".to_string()])
    );
    // The real source is read: the worker imports the state it writes.
    assert!(graph()["worker"].contains("state"));
}

#[test]
fn no_source_file_passes_700_lines_without_its_tests() {
    let root = source_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| Some((f, code_of(f)?.lines().count())))
        .filter(|(_, lines)| *lines > MAX_LINES)
        .map(|(f, lines)| format!("{}: {lines} lines", f.display()))
        .collect();
    assert!(long.is_empty(), "split these files:\n{}", long.join("\n"));
}
