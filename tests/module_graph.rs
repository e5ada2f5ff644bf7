//! The top-level modules of `src/` form no cycle: none imports a module that
//! imports it back, directly or through others. Reads the sources (no build
//! metadata), resolves `crate::`, `super::` and `self::` paths to the top-level
//! module they name, and fails naming the cycle and where each step is used.
//! Code under `#[cfg(test)]` is left out: tests may reach anywhere, as
//! dev-dependencies do; the graph is about the code that ships.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules it uses, each with the first
/// place (`file:line`) it does so.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect_rust_files(&src, &mut files);
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|path| {
            let relative = path
                .strip_prefix(&src)
                .expect("found under src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (relative, text)
        })
        .collect();
    let graph = module_graph(&sources);
    assert!(
        graph.contains_key("config") && graph.contains_key("switch"),
        "the graph misses modules: {graph:?}"
    );
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "top-level modules of src/ import each other in a cycle:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn a_cycle_through_super_and_grouped_paths_is_found_and_named() {
    let sources = [
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        ("a/mod.rs", "mod inner;\n"),
        ("a/inner.rs", "use super::super::{b::Thing, c};\n"),
        ("b.rs", "fn f() { crate::c::g(); }\n"),
        (
            "c.rs",
            "// crate::b is only a comment\nuse crate::{a::x};\n",
        ),
    ]
    .map(|(path, text)| (path.to_owned(), text.to_owned()));
    let graph = module_graph(&sources);
    let cycles = cycles(&graph);
    assert_eq!(cycles.len(), 2, "{cycles:?}");
    assert!(
        cycles[0].starts_with("a -> b -> c -> a")
            && cycles[0].contains("a uses b at a/inner.rs:1")
            && cycles[0].contains("b uses c at b.rs:1")
            && cycles[0].contains("c uses a at c.rs:2"),
        "{}",
        cycles[0]
    );
    assert!(cycles[1].starts_with("a -> c -> a"), "{}", cycles[1]);
}

#[test]
fn test_code_strings_and_local_modules_make_no_edges() {
    let sources = [
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "a.rs",
            "mod local { use super::helper; }\n\
             const S: &str = \"crate::b\";\n\
             fn f<'a>(x: &'a str) -> char { let _ = x; '{' }\n\
             #[cfg(test)]\nmod tests { use crate::b; }\n",
        ),
        ("b.rs", "use crate::a;\n"),
    ]
    .map(|(path, text)| (path.to_owned(), text.to_owned()));
    let graph = module_graph(&sources);
    assert_eq!(graph["a"].len(), 0, "{graph:?}");
    assert_eq!(graph["b"].keys().collect::<Vec<_>>(), ["a"]);
    assert!(cycles(&graph).is_empty());
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
    out.sort();
}

/// The module path of a file under `src/` (`risk/config.rs` -> `risk::config`);
/// empty for a crate root.
fn module_path_of(relative: &str) -> Vec<String> {
    let mut parts: Vec<String> = relative.split('/').map(str::to_owned).collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    let is_root = parts.is_empty() && (stem == "lib" || stem == "main");
    if stem != "mod" && !is_root {
        parts.push(stem.to_owned());
    }
    parts
}

fn module_graph(sources: &[(String, String)]) -> Graph {
    let top_level: BTreeSet<String> = sources
        .iter()
        .filter_map(|(relative, _)| module_path_of(relative).first().cloned())
        .collect();
    let mut graph: Graph = top_level
        .iter()
        .map(|name| (name.clone(), BTreeMap::new()))
        .collect();
    for (relative, text) in sources {
        let module = module_path_of(relative);
        let Some(from) = module.first() else {
            continue; // a crate root declares every module; that is no dependency
        };
        for (target, line) in used_top_level_modules(&module, text) {
            if target != *from && top_level.contains(&target) {
                graph
                    .get_mut(from)
                    .expect("every top-level module has a node")
                    .entry(target)
                    .or_insert_with(|| format!("{relative}:{line}"));
            }
        }
    }
    graph
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// Identifiers, `::` and punctuation with their line, comments and string
/// and char literals removed.
fn tokens(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let count_lines = |from: usize, to: usize, line: &mut usize| {
        *line += chars[from..to.min(chars.len())]
            .iter()
            .filter(|&&c| c == '\n')
            .count();
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let (start, mut depth) = (i, 0);
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            count_lines(start, i, &mut line);
        } else if c == '"' || (c == 'b' && next == Some('"')) {
            let start = i;
            i += if c == 'b' { 2 } else { 1 };
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            count_lines(start, i, &mut line);
        } else if let Some(end) = raw_string_end(&chars, i) {
            count_lines(i, end, &mut line);
            i = end;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 3; // past the quote, the backslash and the escaped char
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Token::Ident(chars[start..i].iter().collect()), line));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c == ':' && next == Some(':') {
            out.push((Token::PathSep, line));
            i += 2;
        } else {
            out.push((Token::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// Where a raw string (`r"…"`, `r#"…"#`, `br"…"`) starting at `i` ends, if one does.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r')
        || (i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
    {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"'
            && chars[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

fn ident(token: Option<&(Token, usize)>) -> Option<&str> {
    match token {
        Some((Token::Ident(name), _)) => Some(name),
        _ => None,
    }
}

/// The top-level modules the non-test code of a file in `module` names, each
/// with a line that names it.
fn used_top_level_modules(module: &[String], text: &str) -> Vec<(String, usize)> {
    let tokens = tokens(text);
    let mut used = Vec::new();
    // Inline `mod name { … }` blocks: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].0 {
            Token::Punct('#') => {
                let inner = tokens.get(i + 1).map(|t| &t.0) == Some(&Token::Punct('!'));
                let start = if inner { i + 2 } else { i + 1 };
                let end = balanced_end(&tokens, start);
                if is_test_only(&tokens[start..end]) {
                    if inner {
                        return used; // the whole file is test code
                    }
                    i = item_end(&tokens, end);
                } else {
                    i = end;
                }
                continue;
            }
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(name), Some((Token::Punct('{'), _))) =
                    (ident(tokens.get(i + 1)), tokens.get(i + 2))
                {
                    inline.push((name.to_owned(), depth + 1));
                }
            }
            Token::Ident(word) if ["crate", "super", "self"].contains(&word.as_str()) => {
                let preceded_by_path =
                    i > 0 && matches!(tokens[i - 1].0, Token::PathSep | Token::Punct('$'));
                if !preceded_by_path {
                    let mut here: Vec<String> = module.to_vec();
                    here.extend(inline.iter().map(|(name, _)| name.clone()));
                    let (targets, next) = resolve(&tokens, i, here);
                    used.extend(targets.into_iter().map(|t| (t, tokens[i].1)));
                    i = next;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    used
}

/// Resolves the path starting at token `i` (`crate`, `super` or `self`) from
/// module `here` to the top-level modules it names; also returns where the
/// path's leading segments end.
fn resolve(tokens: &[(Token, usize)], mut i: usize, mut here: Vec<String>) -> (Vec<String>, usize) {
    match ident(tokens.get(i)) {
        Some("crate") => {
            here.clear();
            i += 1;
        }
        Some("self") => i += 1,
        _ => {
            while ident(tokens.get(i)) == Some("super") {
                here.pop();
                i += 1;
                if tokens.get(i).map(|t| &t.0) == Some(&Token::PathSep)
                    && ident(tokens.get(i + 1)) == Some("super")
                {
                    i += 1;
                }
            }
        }
    }
    if tokens.get(i).map(|t| &t.0) != Some(&Token::PathSep) {
        return (Vec::new(), i);
    }
    i += 1;
    if let Some(top) = here.first() {
        return (vec![top.clone()], i);
    }
    // At the crate root: the next segment, or each first segment of a group.
    match tokens.get(i).map(|t| &t.0) {
        Some(Token::Ident(name)) => (vec![name.clone()], i + 1),
        Some(Token::Punct('{')) => {
            let end = balanced_end(tokens, i);
            let mut names = Vec::new();
            let mut level = 0;
            let mut expect_name = true;
            for (token, _) in &tokens[i + 1..end.saturating_sub(1)] {
                match token {
                    Token::Punct('{') => level += 1,
                    Token::Punct('}') => level -= 1,
                    Token::Punct(',') if level == 0 => expect_name = true,
                    Token::Ident(name) if expect_name && level == 0 => {
                        names.push(name.clone());
                        expect_name = false;
                    }
                    _ => expect_name = false,
                }
            }
            (names, end)
        }
        _ => (Vec::new(), i),
    }
}

/// The index after the bracket group (`[…]`, `{…}`, `(…)`) opening at `start`.
fn balanced_end(tokens: &[(Token, usize)], start: usize) -> usize {
    let mut level = 0usize;
    for (offset, (token, _)) in tokens[start..].iter().enumerate() {
        match token {
            Token::Punct('[' | '{' | '(') => level += 1,
            Token::Punct(']' | '}' | ')') => {
                level = level.saturating_sub(1);
                if level == 0 {
                    return start + offset + 1;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// The index after the item that starts at `start` (past further attributes):
/// its closing `;` or the `}` of its body.
fn item_end(tokens: &[(Token, usize)], mut start: usize) -> usize {
    while tokens.get(start).map(|t| &t.0) == Some(&Token::Punct('#')) {
        start = balanced_end(tokens, start + 1);
    }
    let mut i = start;
    while i < tokens.len() {
        match tokens[i].0 {
            Token::Punct(';') => return i + 1,
            Token::Punct('{') => return balanced_end(tokens, i),
            Token::Punct('(' | '[') => i = balanced_end(tokens, i),
            _ => i += 1,
        }
    }
    tokens.len()
}

/// `[cfg(test)]`, `[cfg(any(test, …))]` and the like, but not `cfg(not(test))`.
fn is_test_only(attribute: &[(Token, usize)]) -> bool {
    let words: Vec<&str> = attribute.iter().filter_map(|t| ident(Some(t))).collect();
    words.first() == Some(&"cfg") && words.contains(&"test") && !words.contains(&"not")
}

/// Every cycle, as `a -> b -> a` followed by where each step is used; each
/// cycle once, starting at its alphabetically first module.
fn cycles(graph: &Graph) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        let mut path = vec![start.clone()];
        walk(graph, start, &mut path, &mut found);
    }
    found
        .into_iter()
        .map(|cycle: Vec<String>| {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|pair| {
                    format!(
                        "{} uses {} at {}",
                        pair[0], pair[1], graph[&pair[0]][&pair[1]]
                    )
                })
                .collect();
            format!("{} ({})", cycle.join(" -> "), steps.join("; "))
        })
        .collect()
}

/// Depth-first from the last module of `path`, recording each path back to
/// `path[0]` that visits only modules after it in order (so each cycle is
/// found once, from its smallest module).
fn walk(graph: &Graph, start: &str, path: &mut Vec<String>, found: &mut BTreeSet<Vec<String>>) {
    let current = path.last().expect("path starts non-empty").clone();
    for next in graph[&current].keys() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(start.to_owned());
            found.insert(cycle);
        } else if next.as_str() > start && !path.contains(next) {
            path.push(next.clone());
            walk(graph, start, path, found);
            path.pop();
        }
    }
}
