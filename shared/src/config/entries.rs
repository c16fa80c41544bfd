//! `name=secret` lists as the configuration takes them (HTTP API keys, Discord bots): in a
//! variable, entries separated by commas or new lines (blank ones skipped, so a trailing comma
//! is fine); in a file, one a line, blank lines and `#` comments skipped. Each entry is parsed
//! by the caller; a bad one is reported by where it stands ("entry 2", "line 3"), never by
//! its text, which may hold the secret.

use std::path::Path;

/// A bad entry of a list, located; `origin` is the variable or the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}, {position}: {problem}")]
pub struct BadEntry {
    pub origin: String,
    pub position: String,
    pub problem: String,
}

/// The entries of the list in `variable`, each parsed by `parse`.
pub fn parse_list<T>(
    variable: &str,
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, BadEntry> {
    text.split([',', '\n'])
        .enumerate()
        .filter(|(_, entry)| !entry.trim().is_empty())
        .map(|(i, entry)| {
            parse(entry).map_err(|problem| BadEntry {
                origin: variable.into(),
                position: format!("entry {}", i + 1),
                problem,
            })
        })
        .collect()
}

/// The entries of the file at `path` named by `variable`, one a line, each parsed by `parse`.
pub fn parse_file<T>(
    variable: &str,
    path: &Path,
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, BadEntry> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim();
            !line.is_empty() && !line.starts_with('#')
        })
        .map(|(i, line)| {
            parse(line).map_err(|problem| BadEntry {
                origin: format!("{variable} {}", path.display()),
                position: format!("line {}", i + 1),
                problem,
            })
        })
        .collect()
}
