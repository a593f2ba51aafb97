//! The library's floors, checked on every run: each top-level module of
//! `shared/src` sits on one floor and imports (`crate::…`, `super::…`
//! reaching the crate root) only modules on its own floor or below, with no
//! import cycle among them; and no file is longer than [`MAX_LINES`] unless
//! its opening comment says why. README's "Architecture" section explains
//! the floors; a new module takes its floor in [`FLOORS`].
//!
//! Comment lines are skipped (a doc link is not an import). The parser reads
//! `crate::` paths, brace groups included, which is all the library uses.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Every top-level module and its floor, lowest first.
const FLOORS: &[(&str, u8)] = &[
    // Leaves: no import above this floor.
    ("error", 0),
    ("response", 0),
    ("clock", 0),
    ("config", 0),
    ("domain", 0),
    ("customer_info", 0),
    ("telemetry", 0),
    // Vocabulary.
    ("ai", 1),
    ("actions", 1),
    ("jobs", 1),
    ("auth", 1),
    // Stores (all SQL lives in `postgres`).
    ("redis", 2),
    ("cache", 2),
    ("postgres", 2),
    // Clients.
    ("pancake", 3),
    ("integrations", 3),
    ("app", 3),
    // Flows.
    ("pipeline", 4),
    ("consumer", 4),
    // HTTP.
    ("http", 5),
    ("handlers", 5),
    ("webhook", 5),
    ("admin", 5),
    ("openapi", 5),
    // Entry points.
    ("lambda", 6),
];

const FLOOR_NAMES: &[&str] = &["leaves", "vocabulary", "stores", "clients", "flows", "HTTP", "entry points"];

/// Longest file without a stated reason.
const MAX_LINES: usize = 500;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable source tree") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `redis/store/admit.rs` → `[redis, store, admit]`, `redis/mod.rs` → `[redis]`.
fn module_path(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src()).expect("a file under src");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    match last.as_str() {
        "mod.rs" | "lib.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_owned()),
    }
    parts
}

/// The file with its comment lines removed, joined into one string.
fn code_of(text: &str) -> String {
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn ident_at(s: &str) -> String {
    s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// The first segment of every item of a `{…}` group starting at `s[0] == '{'`.
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expecting = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    expecting = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expecting = true,
            c if depth == 1 && expecting && (c.is_alphanumeric() || c == '_') => {
                heads.push(ident_at(&s[i..]));
                expecting = false;
            }
            _ => {}
        }
    }
    heads
}

/// The crate-root names a file reaches: `crate::x`, `crate::{x, y::z}`, and
/// `super::` chains that climb out of the top-level module.
fn root_names(file: &Path, code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if after.starts_with('{') {
            names.extend(group_heads(after));
        } else {
            names.push(ident_at(after));
        }
        rest = after;
    }
    let depth = module_path(file).len();
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let preceded_by_ident =
            rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        let mut after = &rest[at..];
        let mut climbs = 0;
        while let Some(next) = after.strip_prefix("super::") {
            climbs += 1;
            after = next;
        }
        if !preceded_by_ident && climbs >= depth {
            if after.starts_with('{') {
                names.extend(group_heads(after));
            } else {
                names.push(ident_at(after));
            }
        }
        rest = after;
    }
    names.retain(|n| !n.is_empty());
    names
}

/// `pub use module::Name;` re-exports of lib.rs: a path through the root
/// name is a path into that module.
fn reexports() -> BTreeMap<String, String> {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let mut map = BTreeMap::new();
    for line in lib.lines() {
        let Some(path) = line.trim().strip_prefix("pub use ").and_then(|l| l.strip_suffix(';')) else { continue };
        let Some((module, names)) = path.split_once("::") else { continue };
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            let name = name.rsplit("::").next().unwrap_or(name);
            map.insert(name.to_owned(), module.to_owned());
        }
    }
    map
}

struct Graph {
    /// module → (imported module → first file that imports it)
    edges: BTreeMap<String, BTreeMap<String, String>>,
    problems: Vec<String>,
}

fn graph() -> Graph {
    let floors: BTreeMap<&str, u8> = FLOORS.iter().copied().collect();
    let reexports = reexports();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let path = module_path(file);
        let Some(module) = path.first().cloned() else { continue }; // lib.rs
        let shown = file.strip_prefix(src()).unwrap_or(file).display().to_string();
        if !floors.contains_key(module.as_str()) {
            problems.push(format!("src/{shown}: module `{module}` has no floor; add it to FLOORS in tests/layers.rs"));
            continue;
        }
        let code = code_of(&fs::read_to_string(file).expect("readable file"));
        for name in root_names(file, &code) {
            let target = if floors.contains_key(name.as_str()) {
                name.clone()
            } else if let Some(module) = reexports.get(&name) {
                module.clone()
            } else {
                problems.push(format!(
                    "src/{shown}: `crate::{name}` is neither a module nor a re-export of lib.rs; import it from its module"
                ));
                continue;
            };
            if target != module {
                edges.entry(module.clone()).or_default().entry(target).or_insert_with(|| shown.clone());
            }
        }
    }
    Graph { edges, problems }
}

#[test]
fn every_module_imports_only_its_own_floor_or_below() {
    let floors: BTreeMap<&str, u8> = FLOORS.iter().copied().collect();
    let Graph { edges, mut problems } = graph();
    for (module, targets) in &edges {
        for (target, file) in targets {
            let (from, to) = (floors[module.as_str()], floors[target.as_str()]);
            if to > from {
                problems.push(format!(
                    "src/{file}: `{module}` ({}) imports `{target}` ({}), a floor above it",
                    FLOOR_NAMES[from as usize], FLOOR_NAMES[to as usize]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "upward imports:\n{}", problems.join("\n"));
}

#[test]
fn the_top_level_modules_form_no_import_cycle() {
    let Graph { edges, .. } = graph();
    // Depth-first search; a back edge is a cycle, reported as its path.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for target in edges.get(node).into_iter().flat_map(|t| t.keys()) {
            if let Some(cycle) = visit(target, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for (module, _) in FLOORS {
        if let Some(cycle) = visit(module, &edges, &mut Vec::new(), &mut done) {
            let hops: Vec<String> =
                cycle.windows(2).map(|w| format!("{} → {} (src/{})", w[0], w[1], edges[&w[0]][&w[1]])).collect();
            panic!("import cycle:\n{}", hops.join("\n"));
        }
    }
}

#[test]
fn no_library_file_is_longer_than_the_limit_without_saying_why() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("readable file");
        let lines = text.lines().count();
        let opening: String =
            text.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join(" ").to_lowercase();
        if lines > MAX_LINES && !opening.contains("longer than") {
            long.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines whose opening comment does not say why (\"longer than …\"):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_reads_groups_and_super_paths() {
    assert_eq!(group_heads("{a::b, c, d::{e, f}, g::h::i}"), ["a", "c", "d", "g"]);
    let file = src().join("redis").join("store.rs");
    let names = root_names(&file, "use super::keys::X; use super::super::ai::Y; use crate::{jobs, domain::Z};");
    assert_eq!(names, ["jobs", "domain", "ai"]);
}
