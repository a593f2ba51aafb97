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
    ("body_cap", 0),
    ("clock", 0),
    ("dates", 0),
    ("deadline", 0),
    ("config", 0),
    ("domain", 0),
    ("customer_info", 0),
    ("telemetry", 0),
    ("metrics", 0),
    ("tls", 0),
    // Vocabulary.
    ("ai", 1),
    ("actions", 1),
    ("jobs", 1),
    ("auth", 1),
    ("chat_token", 1),
    // Stores (all SQL lives in `postgres`).
    ("redis", 2),
    ("cache", 2),
    ("postgres", 2),
    ("connections", 2),
    // Clients.
    ("pancake", 3),
    ("integrations", 3),
    ("app", 3),
    ("handoff", 3),
    ("live", 3),
    // Flows.
    ("pipeline", 4),
    ("consumer", 4),
    ("chat", 4),
    // HTTP.
    ("http", 5),
    ("handlers", 5),
    ("webhook", 5),
    ("admin", 5),
    ("openapi", 5),
    ("chat_api", 5),
    ("ws", 5),
    // Entry points.
    ("lambda", 6),
];

const FLOOR_NAMES: &[&str] = &["leaves", "vocabulary", "stores", "clients", "flows", "HTTP", "entry points"];

/// Longest file without a stated reason.
const MAX_LINES: usize = 500;
/// How a longer file's opening comment states its reason.
const REASON_MARKER: &str = "Longer than 500 lines because";

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

/// The file with its comment lines blanked (line numbers kept).
fn code_of(text: &str) -> String {
    text.lines().map(|l| if l.trim_start().starts_with("//") { "" } else { l }).collect::<Vec<_>>().join("\n")
}

/// 1-based line of byte offset `at`.
fn line_of(code: &str, at: usize) -> usize {
    code[..at].matches('\n').count() + 1
}

/// `crate ::`, `crate::` and `super ::` spelled with any spacing, folded to
/// one form so the search below sees them all.
fn fold_paths(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("::") {
        let (before, after) = rest.split_at(at);
        out.push_str(before.trim_end_matches([' ', '\t']));
        out.push_str("::");
        rest = after[2..].trim_start_matches([' ', '\t']);
    }
    out.push_str(rest);
    out
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

/// The crate-root names a file reaches, with the line of each: `crate::x`,
/// `crate::{x, y::z}`, and `super::` chains that climb out of the top-level
/// module. A glob or an alias of the root (`crate::*`, `use crate as …`,
/// `extern crate self`) would hide what it reaches: it comes back as `*`,
/// which the checker refuses.
fn root_names(file: &Path, code: &str) -> Vec<(String, usize)> {
    let code = fold_paths(code);
    let mut names = Vec::new();
    let heads = |after: &str| -> Vec<String> {
        if after.starts_with('{') { group_heads(after) } else { vec![ident_at(after)] }
    };
    for alias in ["crate as ", "crate self as ", "extern crate self"] {
        for (at, _) in code.match_indices(alias) {
            names.push(("*".to_owned(), line_of(&code, at)));
        }
    }
    for (at, _) in code.match_indices("crate::") {
        let preceded = code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        if preceded {
            continue; // `$crate::` in a macro, or a longer identifier
        }
        let after = &code[at + "crate::".len()..];
        let line = line_of(&code, at);
        names.extend(heads(after).into_iter().map(|n| (n, line)));
        if after.starts_with('*') {
            names.push(("*".to_owned(), line));
        }
    }
    let depth = module_path(file).len();
    let mut rest = code.as_str();
    let mut offset = 0;
    while let Some(at) = rest.find("super::") {
        let preceded_by_ident =
            rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        let line = line_of(&code, offset + at);
        let mut after = &rest[at..];
        let mut climbs = 0;
        while let Some(next) = after.strip_prefix("super::") {
            climbs += 1;
            after = next;
        }
        // A lone `super::*` is the inline `mod tests` idiom (the file's own
        // module); any longer chain reaching the root with a glob counts.
        if !preceded_by_ident && climbs >= depth {
            names.extend(heads(after).into_iter().map(|n| (n, line)));
            if after.starts_with('*') && climbs > 1 {
                names.push(("*".to_owned(), line));
            }
        }
        offset += rest.len() - after.len();
        rest = after;
    }
    names.retain(|(n, _)| !n.is_empty());
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
    /// module → (imported module → first `src/file:line` that imports it)
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
        for (name, line) in root_names(file, &code) {
            let at = format!("src/{shown}:{line}");
            let target = if name == "*" {
                problems
                    .push(format!("{at}: a glob or alias of the crate root hides what it imports; name the module"));
                continue;
            } else if floors.contains_key(name.as_str()) {
                name.clone()
            } else if let Some(module) = reexports.get(&name).filter(|m| floors.contains_key(m.as_str())) {
                module.clone()
            } else {
                problems.push(format!(
                    "{at}: `crate::{name}` is neither a module nor a re-export of lib.rs; import it from its module"
                ));
                continue;
            };
            if target != module {
                edges.entry(module.clone()).or_default().entry(target).or_insert(at);
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
                    "{file}: `{module}` ({}) imports `{target}` ({}), a floor above it",
                    FLOOR_NAMES[from as usize], FLOOR_NAMES[to as usize]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "imports that break the floors:\n{}", problems.join("\n"));
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
                cycle.windows(2).map(|w| format!("{} → {} ({})", w[0], w[1], edges[&w[0]][&w[1]])).collect();
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
        let opening: String = text.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join(" ");
        if lines > MAX_LINES && !opening.contains(REASON_MARKER) {
            long.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines whose opening comment does not say why (\"{REASON_MARKER} …\"):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_reads_groups_spacing_globs_and_super_paths() {
    assert_eq!(group_heads("{a::b, c, d::{e, f}, g::h::i}"), ["a", "c", "d", "g"]);
    let file = src().join("redis").join("store").join("mod.rs");
    let names = |code: &str| -> Vec<String> { root_names(&file, code).into_iter().map(|(n, _)| n).collect() };
    assert_eq!(
        names("use super::keys::X; use super::super::ai::Y; use crate::{jobs,\n  domain::Z};"),
        ["jobs", "domain", "ai"]
    );
    assert_eq!(names("let x = crate :: pipeline :: run();"), ["pipeline"]);
    assert_eq!(names("macro_rules! m { () => { $crate::x::y() } }"), Vec::<String>::new());
    assert!(names("use crate::*;").contains(&"*".to_owned()));
    assert!(names("use crate as root;").contains(&"*".to_owned()));
    assert!(names("use super::super::*;").contains(&"*".to_owned()));
    let top = src().join("clock.rs");
    let in_tests: Vec<String> = root_names(&top, "mod tests { use super::*; }").into_iter().map(|(n, _)| n).collect();
    assert!(in_tests.is_empty(), "a test module's `super::*` is its own file");
    assert_eq!(root_names(&file, "\n\nuse crate::jobs;")[0].1, 3);
}
