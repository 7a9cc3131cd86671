//! No import cycles inside a crate: the modules of each library form a directed acyclic graph.
//!
//! A node is a module file (`shard/context.rs` is `shard::context`, `handler/mod.rs` is
//! `handler`). An edge `a -> b` is any `crate::`, `super::` or `self::` path in `a`'s code (test
//! modules and comments aside) that names module `b` or an item of it; a path naming an item
//! resolves to the deepest module file it passes through. A module and its own ancestors or
//! descendants count as one (a `mod.rs` re-exporting its children, a child using its parent's
//! items), so those edges are left out. Any other cycle fails the test, printed module by module.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The library crates whose `src/` is checked.
const CRATES: [&str; 8] = [
    "common",
    "protocol",
    "storage",
    "broker",
    "namesrv",
    "controller",
    "client",
    "tools",
];

type Module = Vec<String>;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives one level below the repository root")
        .to_path_buf()
}

/// Every module file below `src` (binaries in `src/bin` are crates of their own).
fn module_files(src: &Path) -> BTreeMap<Module, String> {
    let mut modules = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path != src.join("bin") {
                    pending.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap_or(&path);
            let mut module: Module = relative
                .with_extension("")
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                module.pop();
            }
            if let Ok(text) = fs::read_to_string(&path) {
                modules.insert(module, code_outside_tests(&text));
            }
        }
    }
    modules
}

/// `text` without comment lines and without a trailing `#[cfg(test)] mod ... { }` block.
fn code_outside_tests(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod ") && next.ends_with('{'))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Parses the use tree after `crate::` / `super::` / `self::` at `at`, pushing every full path.
fn parse_tree(code: &[u8], mut at: usize, prefix: &[String], out: &mut Vec<Module>) -> usize {
    let mut path = prefix.to_vec();
    loop {
        while code.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        if code.get(at) == Some(&b'{') {
            at += 1;
            loop {
                while code
                    .get(at)
                    .is_some_and(|b| b.is_ascii_whitespace() || *b == b',')
                {
                    at += 1;
                }
                match code.get(at) {
                    Some(b'}') => return at + 1,
                    None => return at,
                    _ => at = parse_tree(code, at, &path, out),
                }
            }
        }
        let start = at;
        while code.get(at).copied().is_some_and(is_ident_byte) {
            at += 1;
        }
        if at == start {
            out.push(path);
            return at;
        }
        path.push(String::from_utf8_lossy(&code[start..at]).into_owned());
        if code.get(at..at + 2) == Some(b"::") {
            at += 2;
        } else {
            out.push(path);
            return at;
        }
    }
}

/// The absolute module paths `code` (of module `module`) names.
fn referenced_paths(module: &Module, code: &str) -> Vec<Module> {
    let bytes = code.as_bytes();
    let mut paths = Vec::new();
    for (keyword, base) in [
        ("crate::", Vec::new()),
        ("super::", {
            // `super` of `a/b.rs` (module a::b) is `a`; of `a/b/mod.rs` (also a::b) it is `a`.
            let mut parent = module.clone();
            parent.pop();
            parent
        }),
        ("self::", module.clone()),
    ] {
        for (index, _) in code.match_indices(keyword) {
            if index > 0 && is_ident_byte(bytes[index - 1]) {
                continue; // `my_crate::`, `itself::`
            }
            parse_tree(bytes, index + keyword.len(), &base, &mut paths);
        }
    }
    paths
}

/// The deepest module of `modules` that `path` passes through.
fn resolve(modules: &BTreeMap<Module, String>, path: &Module) -> Module {
    (0..=path.len())
        .rev()
        .map(|len| path[..len].to_vec())
        .find(|prefix| modules.contains_key(prefix))
        .unwrap_or_default()
}

fn related(a: &Module, b: &Module) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// A cycle of `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        marks: &mut BTreeMap<Module, Mark>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|m| m == node).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(node.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, edges, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

fn module_graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = module_files(src);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in &modules {
        let targets = edges.entry(module.clone()).or_default();
        for path in referenced_paths(module, code) {
            let target = resolve(&modules, &path);
            if !related(module, &target) {
                targets.insert(target);
            }
        }
    }
    edges
}

fn show(module: &Module) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn library_modules_form_no_cycle() {
    let root = repository_root();
    let mut cycles = Vec::new();
    for name in CRATES {
        let mut graph = module_graph(&root.join(name).join("src"));
        assert!(
            graph.len() > 1 || name == "common",
            "{name}: no modules found"
        );
        // Report every cycle: cut each found one at its last edge and look again.
        while let Some(cycle) = find_cycle(&graph) {
            let shown: Vec<String> = cycle.iter().map(show).collect();
            cycles.push(format!("{name}: {}", shown.join(" -> ")));
            let [.., from, to] = cycle.as_slice() else {
                break;
            };
            if let Some(targets) = graph.get_mut(from) {
                targets.remove(to);
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_parser_sees_use_trees_and_paths() {
    let mut paths = Vec::new();
    let code = b"a::{b, c::{d, E}}, f;";
    parse_tree(code, 0, &["x".to_owned()], &mut paths);
    let shown: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(shown, ["x::a::b", "x::a::c::d", "x::a::c::E"]);

    let module: Module = vec!["shard".into(), "run".into()];
    let found = referenced_paths(&module, "use super::context::Ctx; crate::handler::run(x)");
    let shown: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(shown, ["handler::run", "shard::context::Ctx"]);

    let a: Module = vec!["a".into()];
    let b: Module = vec!["b".into()];
    let mut edges = BTreeMap::new();
    edges.insert(a.clone(), BTreeSet::from([b.clone()]));
    edges.insert(b.clone(), BTreeSet::from([a.clone()]));
    assert!(find_cycle(&edges).is_some());
    edges.insert(b, BTreeSet::new());
    assert!(find_cycle(&edges).is_none());
}
