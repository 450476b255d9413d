//! Every example in the documentation is one the binary accepts: each YAML block of the
//! README and docs/ that is a policy (top-level `authenticators`, `handlers`, `settings`,
//! `roles`, `access_policies`, `limits`) passes `graphguard check`, each policy-test block passes
//! `graphguard test` against the policy set it names, and each `$ graphguard explain ...` block
//! prints exactly the lines shown under it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

const DOCS: [&str; 6] = [
    "README.md",
    "docs/policies.md",
    "docs/access-control.md",
    "docs/limits.md",
    "docs/operations.md",
    "deploy/README.md",
];

const POLICY_KEYS: [&str; 6] = [
    "authenticators",
    "handlers",
    "settings",
    "roles",
    "access_policies",
    "limits",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fenced blocks of one language: (first line number, text without the fence's indentation).
fn blocks(text: &str, lang: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut current {
            None if trimmed.strip_prefix("```") == Some(lang) => {
                current = Some((i + 2, indent, String::new()));
            }
            Some(_) if trimmed.starts_with("```") => {
                out.extend(current.take().map(|(line, _, body)| (line, body)));
            }
            Some((_, indent, body)) => {
                body.push_str(line.get(*indent..).unwrap_or(trimmed));
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

fn graphguard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_graphguard"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

/// A policy directory holding `yaml`, plus the demo API keys when it has no authenticators.
fn policy_dir(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.yaml"), yaml).unwrap();
    if !yaml.lines().any(|l| l.starts_with("authenticators:")) {
        std::fs::copy(
            repo().join("policies/owner/authenticators.yaml"),
            dir.path().join("authenticators.yaml"),
        )
        .unwrap();
    }
    dir
}

fn top_level_keys(yaml: &str) -> Vec<String> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap_or_default();
    v.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_policy_example_in_the_docs_passes_check() {
    let mut checked = 0;
    for doc in DOCS {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        for (line, yaml) in blocks(&text, "yaml") {
            let keys = top_level_keys(&yaml);
            if keys.is_empty() || !keys.iter().all(|k| POLICY_KEYS.contains(&k.as_str())) {
                continue;
            }
            let dir = policy_dir(&yaml);
            let out = graphguard(&["check", dir.path().to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{doc}:{line}: graphguard check refuses the example:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} policy examples found");
}

#[test]
fn every_policy_test_example_in_the_docs_passes() {
    let mut ran = 0;
    for doc in DOCS {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        for (line, yaml) in blocks(&text, "yaml") {
            if top_level_keys(&yaml) != ["tests"] {
                continue;
            }
            // The block names its policy set in a comment: `# policy: policies/owner`.
            let policy = yaml
                .lines()
                .find_map(|l| l.strip_prefix("# policy: "))
                .unwrap_or_else(|| panic!("{doc}:{line}: a tests block names `# policy: DIR`"));
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &yaml).unwrap();
            let out = graphguard(&["test", policy.trim(), file.path().to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{doc}:{line}: the policy tests fail:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    assert!(ran >= 1);
}

#[test]
fn every_explain_example_in_the_docs_prints_what_it_shows() {
    let mut ran = 0;
    for doc in DOCS {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        for (line, block) in blocks(&text, "sh") {
            let Some(rest) = block.strip_prefix("$ graphguard explain ") else {
                continue;
            };
            // The command may continue over lines ending in `\`; the rest is its output.
            let mut command = String::new();
            let mut lines = rest.lines();
            for l in lines.by_ref() {
                match l.strip_suffix('\\') {
                    Some(part) => command.push_str(part),
                    None => {
                        command.push_str(l);
                        break;
                    }
                }
            }
            let expected: Vec<&str> = lines.collect();
            let args = shell_words(&command);
            let mut all = vec!["explain"];
            all.extend(args.iter().map(String::as_str));
            let out = graphguard(&all);
            assert!(out.status.success(), "{doc}:{line}: {out:?}");
            let printed = String::from_utf8_lossy(&out.stdout);
            let printed: Vec<&str> = printed.lines().take(expected.len()).collect();
            assert_eq!(printed, expected, "{doc}:{line}: explain prints otherwise");
            ran += 1;
        }
    }
    assert!(ran >= 1);
}

/// Split a command line on white space, keeping single-quoted words whole.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

#[test]
fn the_docs_link_only_to_files_that_exist() {
    for doc in DOCS.iter().chain(&[
        "docs/security.md",
        "docs/compatibility.md",
        "docs/architecture.md",
        "docs/inventory.md",
        "docs/semantics.md",
    ]) {
        let path = repo().join(doc);
        let text = std::fs::read_to_string(&path).unwrap();
        let base = path.parent().unwrap_or(Path::new("."));
        for (i, _) in text.match_indices("](") {
            let target: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
            if target.starts_with("http") || target.starts_with('#') || target.contains('<') {
                continue;
            }
            let file = target.split('#').next().unwrap_or_default();
            assert!(
                base.join(file).exists(),
                "{doc}: link to {target} names no file"
            );
        }
    }
}
