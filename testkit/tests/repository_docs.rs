//! The repository explains itself: every document a file points to is in the repository.
//!
//! Walks the repository's source and documentation files and fails, listing every offender, when
//! - a `something.md` reference does not resolve to a file inside the repository (looked up
//!   beside the referring file, then in each directory above it up to the repository root);
//! - a section citation such as `docs/protocol.md §5.4` names a section the document lacks (a
//!   heading whose first word is the section number: `## 5. Message encoding`,
//!   `### 5.4 Stored message record`); a bare `§N.M` inside `docs/` cites the same document;
//! - a cited source path from the repository root (`storage/src/store.rs`) does not exist;
//! - a Markdown link `[text](target)` points to a relative path that does not exist;
//! - a file mentions an issue number, or a Markdown file a commit hash: history lives in git.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// File names scanned besides the extensions below.
const EXTRA_FILES: [&str; 1] = [".ci/run"];
/// Extensions scanned.
const EXTENSIONS: [&str; 5] = ["rs", "md", "toml", "sh", "go"];

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives one level below the repository root")
        .to_path_buf()
}

/// Every scanned file, as (path relative to the root, text).
fn scanned_files(root: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let skipped = name == "target"
                    || name == "corpus"
                    || name == "artifacts"
                    || name == "node_modules"
                    || (name.starts_with('.') && name != ".ci");
                if !skipped {
                    pending.push(path);
                }
                continue;
            }
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let by_extension = path
                .extension()
                .and_then(|ext| ext.to_str())
                .is_some_and(|ext| EXTENSIONS.contains(&ext));
            let by_name = EXTRA_FILES.iter().any(|extra| relative == Path::new(extra));
            if by_extension || by_name {
                if let Ok(text) = fs::read_to_string(&path) {
                    files.push((relative, text));
                }
            }
        }
    }
    files.sort();
    files
}

fn is_path_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b'/')
}

/// The `*.md` path tokens of a line, with their byte ranges, skipping URLs.
fn doc_tokens(line: &str) -> Vec<(usize, usize, &str)> {
    let bytes = line.as_bytes();
    let mut tokens = Vec::new();
    let mut search_from = 0;
    while let Some(found) = line[search_from..].find(".md") {
        let dot = search_from + found;
        let end = dot + 3;
        search_from = end;
        if bytes.get(end).is_some_and(|&b| b.is_ascii_alphanumeric()) {
            continue; // `.mdx`, `.md5`, ...
        }
        let mut start = dot;
        while start > 0 && is_path_byte(bytes[start - 1]) {
            start -= 1;
        }
        let token = &line[start..end];
        let is_url = token.starts_with("//") || line[..start].ends_with("://");
        if is_url || token == ".md" || token.starts_with("*.") {
            continue;
        }
        // `*.md` globs and `foo_*.md` patterns are prose, not references.
        if start > 0 && bytes[start - 1] == b'*' {
            continue;
        }
        tokens.push((start, end, token));
    }
    tokens
}

/// Top-level directories whose files are cited by path (`broker/src/shard.rs`).
const CITED_DIRS: [&str; 12] = [
    "common", "protocol", "storage", "broker", "namesrv", "client", "tools", "testkit", "benches",
    "fuzz", "docs", ".ci",
];

/// Paths of source files and scripts cited from the repository root (`storage/src/store.rs`,
/// `benches/broker-bench.sh`), which must exist: a file that moved leaves no stale pointer.
fn source_paths(line: &str) -> Vec<&str> {
    let bytes = line.as_bytes();
    let mut paths = Vec::new();
    for extension in [".rs", ".sh"] {
        let mut search_from = 0;
        while let Some(found) = line[search_from..].find(extension) {
            let dot = search_from + found;
            let end = dot + extension.len();
            search_from = end;
            if bytes
                .get(end)
                .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'/')
            {
                continue;
            }
            let mut start = dot;
            while start > 0 && is_path_byte(bytes[start - 1]) {
                start -= 1;
            }
            let path = &line[start..end];
            let cited = path
                .split_once('/')
                .is_some_and(|(first, _)| CITED_DIRS.contains(&first));
            // `{a,b}.rs` and `*.rs` are patterns, not paths.
            let pattern = start > 0 && matches!(bytes[start - 1], b'*' | b'}' | b'{' | b',');
            if cited && !pattern {
                paths.push(path);
            }
        }
    }
    paths
}

/// Resolves `reference` as written in `file`: beside it, then in each directory above it up to
/// the root. `None` when it does not exist or would leave the repository.
fn resolve(root: &Path, file: &Path, reference: &str) -> Option<PathBuf> {
    let mut dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    loop {
        if let Some(candidate) = normalize(&dir.join(reference)) {
            if root.join(&candidate).exists() {
                return Some(candidate);
            }
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// `a/b/../c` -> `a/c`; `None` when the path climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The section numbers a document's headings start with (`5`, `5.4`).
fn section_numbers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start_matches('#');
            if rest.len() == line.len() || !rest.starts_with(' ') {
                return None;
            }
            let first = rest.split_whitespace().next()?;
            let number = first.trim_end_matches('.');
            let numeric = !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && number.as_bytes()[0].is_ascii_digit();
            numeric.then(|| number.to_owned())
        })
        .collect()
}

/// The `§N.M` citations in `text`, without trailing punctuation.
fn citations(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for (index, _) in text.match_indices('§') {
        let rest = &text[index + '§'.len_utf8()..];
        let len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let number = rest[..len].trim_end_matches('.');
        if !number.is_empty() {
            found.push(number);
        }
    }
    found
}

/// The targets of Markdown links `[text](target)` on a line.
fn markdown_links(line: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut search_from = 0;
    while let Some(found) = line[search_from..].find("](") {
        let start = search_from + found + 2;
        let Some(len) = line[start..].find(')') else {
            break;
        };
        targets.push(&line[start..start + len]);
        search_from = start + len;
    }
    targets
}

/// Whether `line` names an issue by number ("issue 7", "issue #7", "issues 5 and 6").
fn mentions_issue_number(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.match_indices("issue").any(|(index, _)| {
        let rest = lower[index + "issue".len()..].trim_start_matches('s');
        let rest = rest.trim_start_matches([' ', '#']);
        rest.len() < lower.len() - index - "issue".len()
            && rest.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// Whether `line` holds something shaped like a commit hash: 7 to 40 hex digits with at least
/// one letter and one digit, standing alone, not a `0x` number.
fn mentions_commit_hash(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric())
        .enumerate()
        .any(|(index, word)| {
            let hex = (7..=40).contains(&word.len())
                && word
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && word.bytes().any(|b| b.is_ascii_digit())
                && word.bytes().any(|b| b.is_ascii_alphabetic());
            hex && !(index > 0 && line.contains(&format!("0x{word}")))
        })
}

#[test]
fn every_reference_points_inside_the_repository() {
    let root = repository_root();
    let files = scanned_files(&root);
    assert!(
        files.iter().any(|(path, _)| path == Path::new("README.md")),
        "the walk found no README.md under {}",
        root.display()
    );
    let mut problems = Vec::new();
    // This file's own examples are not references.
    let this_file = Path::new("testkit/tests/repository_docs.rs");
    for (file, text) in files.iter().filter(|(path, _)| path != this_file) {
        let is_markdown = file.extension().is_some_and(|ext| ext == "md");
        let in_docs = file.starts_with("docs");
        for (line_index, line) in text.lines().enumerate() {
            let at = format!("{}:{}", file.display(), line_index + 1);
            let tokens = doc_tokens(line);
            for (position, &(_, end, reference)) in tokens.iter().enumerate() {
                let Some(target) = resolve(&root, file, reference) else {
                    problems.push(format!(
                        "{at}: `{reference}` is not a file in the repository"
                    ));
                    continue;
                };
                let until = tokens.get(position + 1).map_or(line.len(), |next| next.0);
                let cited = citations(&line[end..until]);
                if cited.is_empty() {
                    continue;
                }
                let sections = fs::read_to_string(root.join(&target))
                    .map(|doc| section_numbers(&doc))
                    .unwrap_or_default();
                for number in cited {
                    if !sections.iter().any(|s| s == number) {
                        problems.push(format!("{at}: `{reference}` has no section {number}"));
                    }
                }
            }
            for path in source_paths(line) {
                if !root.join(path).exists() {
                    problems.push(format!("{at}: `{path}` does not exist"));
                }
            }
            if in_docs && tokens.is_empty() {
                let sections = section_numbers(text);
                for number in citations(line) {
                    if !sections.iter().any(|s| s == number) {
                        problems.push(format!("{at}: this document has no section {number}"));
                    }
                }
            }
            if is_markdown {
                for link in markdown_links(line) {
                    let target = link.split('#').next().unwrap_or_default();
                    let external = link.contains("://") || link.starts_with("mailto:");
                    if external || target.is_empty() {
                        continue;
                    }
                    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
                    let exists =
                        normalize(&dir.join(target)).is_some_and(|p| root.join(p).exists());
                    if !exists {
                        problems.push(format!("{at}: link target `{link}` does not exist"));
                    }
                }
            }
            if mentions_issue_number(line) {
                problems.push(format!(
                    "{at}: names an issue number (history belongs in git)"
                ));
            }
            if is_markdown && mentions_commit_hash(line) {
                problems.push(format!("{at}: names what looks like a commit hash"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} reference problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_checks_catch_what_they_claim_to() {
    assert_eq!(
        doc_tokens("see docs/protocol.md §5.4")[0].2,
        "docs/protocol.md"
    );
    assert!(doc_tokens("https://example.org/x.md").is_empty());
    assert_eq!(citations("§3.3 and §7, §5.4."), ["3.3", "7", "5.4"]);
    assert_eq!(
        section_numbers("# T\n## 5. Message\n### 5.4 Record\n## Notes\n"),
        ["5", "5.4"]
    );
    assert_eq!(
        markdown_links("[a](docs/x.md#y) and [b](https://z)"),
        ["docs/x.md#y", "https://z"]
    );
    assert!(mentions_issue_number("fixed in issue 7"));
    assert!(mentions_issue_number("Issues 5 and 6"));
    assert!(mentions_issue_number("see issue #12"));
    assert!(!mentions_issue_number("no issue here; issues remain"));
    assert!(mentions_commit_hash("measured at 73eb814"));
    assert!(!mentions_commit_hash("magic 0xdeadbeef1 and word cafebabe"));
    assert!(normalize(Path::new("a/../../outside/NOTES.md")).is_none());
    assert_eq!(
        source_paths("see storage/src/store.rs and benches/x.sh, not src/lib.rs or broker/*.rs"),
        ["storage/src/store.rs", "benches/x.sh"]
    );
}
