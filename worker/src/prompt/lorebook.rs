//! The lorebook component: entries of the card's `character_book` and of attached lorebooks
//! whose keys appear in the conversation's latest messages, inserted before or after the
//! character block (two sections, [`ComponentKind::WorldInfoBefore`] and
//! [`ComponentKind::WorldInfoAfter`]).
//!
//! Per book, following the V2/V3 specs: only `enabled` entries; `constant` ones always; the
//! others when a key occurs in the last `scan_depth` messages (the user's new message
//! included) — case-insensitive unless `case_sensitive`, regular expressions when `use_regex`
//! or written `/pattern/flags` (SillyTavern's form; an invalid pattern never matches), and
//! with `selective` also one of `secondary_keys`. With `recursive_scanning` the contents of
//! activated entries are scanned too, until nothing new activates. Within the book's
//! `token_budget` entries are kept by `priority` (constant first, then higher priority, then
//! lower `insertion_order`) and appear in `insertion_order`. V3 decorators (`@@…` lines at
//! the start of a content) are trimmed and not interpreted.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::RegexBuilder;
use whisperfleet_shared::cards::lorebook::is_slash_regex;
use whisperfleet_shared::cards::{LoreEntry, LorePosition, Lorebook};
use whisperfleet_shared::character::Character;
use whisperfleet_shared::prompt::estimate_tokens;

use super::model::{Component, ComponentKind, HistoryEntry};

/// Messages scanned when a book does not say (SillyTavern's default is 2; cards written for
/// it that rely on more say so).
pub const DEFAULT_SCAN_DEPTH: usize = 4;
/// Recursion stops here even if entries keep activating each other.
const MAX_RECURSION: usize = 8;
/// A key's compiled regex may not be larger than this (keys come from imported files).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One entry chosen for this turn.
#[derive(Debug, Clone, PartialEq)]
pub struct LoreHit {
    pub position: LorePosition,
    pub insertion_order: f64,
    pub content: String,
}

/// Scanned text, lower-cased once for every case-insensitive key.
struct Scan<'a> {
    text: &'a str,
    lower: String,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            lower: text.to_lowercase(),
        }
    }
}

/// Regex keys compiled so far in this process: a character's lorebook is scanned on every
/// turn, and compiling its patterns each time would cost more than the scan. Bounded: past
/// [`REGEX_CACHE_MAX`] patterns the cache starts over.
static REGEX_CACHE: LazyLock<Mutex<RegexCache>> = LazyLock::new(Mutex::default);
/// (pattern, case-insensitive) → the compiled pattern, `None` when it does not compile.
type RegexCache = HashMap<(String, bool), Option<regex::Regex>>;
const REGEX_CACHE_MAX: usize = 4096;

/// `pattern` compiled (`None` when invalid or too large), from the cache when it was before.
fn compiled(pattern: &str, insensitive: bool) -> Option<regex::Regex> {
    let key = (pattern.to_string(), insensitive);
    if let Some(hit) = REGEX_CACHE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        return hit.clone();
    }
    let re = RegexBuilder::new(pattern)
        .case_insensitive(insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .ok();
    let mut cache = REGEX_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= REGEX_CACHE_MAX {
        cache.clear();
    }
    cache.insert(key, re.clone());
    re
}

/// One key, ready to match: compiled once per scan, used in every recursion round.
enum Key {
    /// Plain text; lower-cased when the match ignores case.
    Text {
        key: String,
        insensitive: bool,
    },
    Regex(regex::Regex),
    /// An invalid pattern (or an empty key): never matches.
    Never,
}

impl Key {
    fn new(entry: &LoreEntry, key: &str) -> Self {
        let key = key.trim();
        let insensitive = entry.case_sensitive != Some(true);
        let regex = |pattern: &str, insensitive: bool| {
            compiled(pattern, insensitive).map_or(Key::Never, Key::Regex)
        };
        if key.is_empty() {
            Key::Never
        } else if is_slash_regex(key) {
            let end = key.rfind('/').unwrap_or(key.len());
            regex(&key[1..end], key[end + 1..].contains('i') || insensitive)
        } else if entry.use_regex {
            regex(key, insensitive)
        } else if insensitive {
            Key::Text {
                key: key.to_lowercase(),
                insensitive,
            }
        } else {
            Key::Text {
                key: key.to_string(),
                insensitive,
            }
        }
    }

    fn matches(&self, scan: &Scan<'_>) -> bool {
        match self {
            Key::Text {
                key,
                insensitive: true,
            } => scan.lower.contains(key.as_str()),
            Key::Text { key, .. } => scan.text.contains(key.as_str()),
            Key::Regex(re) => re.is_match(scan.text),
            Key::Never => false,
        }
    }
}

/// An entry's keys, compiled.
struct Matcher {
    keys: Vec<Key>,
    /// Empty unless the entry is selective (and not regex: the V3 spec ignores secondary
    /// keys then).
    secondary: Vec<Key>,
}

impl Matcher {
    fn new(entry: &LoreEntry) -> Self {
        let compile = |keys: &[String]| keys.iter().map(|k| Key::new(entry, k)).collect();
        Self {
            keys: compile(&entry.keys),
            secondary: if entry.selective && !entry.use_regex {
                compile(&entry.secondary_keys)
            } else {
                Vec::new()
            },
        }
    }

    fn activated(&self, scan: &Scan<'_>) -> bool {
        self.keys.iter().any(|k| k.matches(scan))
            && (self.secondary.is_empty() || self.secondary.iter().any(|k| k.matches(scan)))
    }
}

/// Content without leading `@@decorator` lines.
fn strip_decorators(content: &str) -> &str {
    let mut rest = content.trim_start();
    while rest.starts_with("@@") {
        rest = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
    }
    rest.trim()
}

/// The entries of one book this turn's messages activate, within its budget.
fn select(book: &Lorebook, messages: &[&str]) -> Vec<LoreHit> {
    let depth = book.scan_depth.map_or(DEFAULT_SCAN_DEPTH, |d| d as usize);
    let window = messages[messages.len().saturating_sub(depth)..].join("\n");
    let window = Scan::new(&window);
    let candidates: Vec<&LoreEntry> = book
        .entries
        .iter()
        .filter(|e| e.enabled && !strip_decorators(&e.content).is_empty())
        .collect();
    let matchers: Vec<Matcher> = candidates.iter().map(|e| Matcher::new(e)).collect();
    let mut on: Vec<bool> = candidates
        .iter()
        .zip(&matchers)
        .map(|(e, m)| e.constant || m.activated(&window))
        .collect();
    if book.recursive_scanning == Some(true) {
        for _ in 0..MAX_RECURSION {
            let scanned: String = candidates
                .iter()
                .zip(&on)
                .filter(|(_, on)| **on)
                .map(|(e, _)| strip_decorators(&e.content))
                .collect::<Vec<_>>()
                .join("\n");
            let scanned = Scan::new(&scanned);
            let mut changed = false;
            for (i, m) in matchers.iter().enumerate() {
                if !on[i] && m.activated(&scanned) {
                    on[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }
    let mut chosen: Vec<&LoreEntry> = candidates
        .iter()
        .zip(&on)
        .filter(|(_, on)| **on)
        .map(|(e, _)| *e)
        .collect();
    // Who stays under the budget: constant first, then higher priority (an entry without
    // one ranks by insertion order, as the spec allows), then lower insertion order.
    chosen.sort_by(|a, b| {
        b.constant
            .cmp(&a.constant)
            .then_with(|| {
                let pa = a.priority.unwrap_or(a.insertion_order);
                let pb = b.priority.unwrap_or(b.insertion_order);
                pb.partial_cmp(&pa).unwrap_or(Ordering::Equal)
            })
            .then_with(|| {
                a.insertion_order
                    .partial_cmp(&b.insertion_order)
                    .unwrap_or(Ordering::Equal)
            })
    });
    let mut used = 0usize;
    let mut hits: Vec<LoreHit> = Vec::new();
    for e in chosen {
        let content = strip_decorators(&e.content);
        let cost = estimate_tokens(content);
        if let Some(budget) = book.token_budget
            && used + cost > budget as usize
        {
            continue;
        }
        used += cost;
        hits.push(LoreHit {
            position: e.position,
            insertion_order: e.insertion_order,
            content: content.to_string(),
        });
    }
    hits.sort_by(|a, b| {
        a.insertion_order
            .partial_cmp(&b.insertion_order)
            .unwrap_or(Ordering::Equal)
    });
    hits
}

/// Every lore entry this turn activates: the card's book first, then attached books.
pub fn lore_hits(c: &Character, history: &[HistoryEntry], user_text: &str) -> Vec<LoreHit> {
    let messages: Vec<&str> = history
        .iter()
        .map(|h| h.text.as_str())
        .chain(std::iter::once(user_text))
        .collect();
    c.card
        .as_ref()
        .and_then(|card| card.data.character_book.as_ref())
        .into_iter()
        .chain(c.lorebooks.iter())
        .flat_map(|book| select(book, &messages))
        .collect()
}

/// The lore section at `position`, if any entry goes there, each content resolved for the
/// prompt ([`resolve_text`](super::card::resolve_text)).
pub fn lorebook(
    c: &Character,
    user_name: &str,
    hits: &[LoreHit],
    position: LorePosition,
) -> Option<Component> {
    let texts: Vec<String> = hits
        .iter()
        .filter(|h| h.position == position)
        .map(|h| super::card::resolve_text(c, user_name, &h.content))
        .collect();
    if texts.is_empty() {
        return None;
    }
    let kind = lore_kind(position);
    Some(Component::new(
        kind,
        format!("{}\n{}", kind.heading(), texts.join("\n\n")),
    ))
}

/// The section a position's entries go into.
pub fn lore_kind(position: LorePosition) -> ComponentKind {
    match position {
        LorePosition::BeforeChar => ComponentKind::WorldInfoBefore,
        LorePosition::AfterChar => ComponentKind::WorldInfoAfter,
    }
}

#[cfg(test)]
mod tests;
