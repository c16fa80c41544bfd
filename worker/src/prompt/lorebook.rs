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

fn key_matches(entry: &LoreEntry, key: &str, scan: &Scan<'_>) -> bool {
    let key = key.trim();
    if key.is_empty() {
        return false;
    }
    let insensitive = entry.case_sensitive != Some(true);
    if is_slash_regex(key) {
        let end = key.rfind('/').unwrap_or(key.len());
        let flags = &key[end + 1..];
        return regex_matches(&key[1..end], flags.contains('i') || insensitive, scan.text);
    }
    if entry.use_regex {
        return regex_matches(key, insensitive, scan.text);
    }
    if insensitive {
        scan.lower.contains(&key.to_lowercase())
    } else {
        scan.text.contains(key)
    }
}

fn regex_matches(pattern: &str, insensitive: bool, text: &str) -> bool {
    RegexBuilder::new(pattern)
        .case_insensitive(insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .is_ok_and(|re| re.is_match(text))
}

fn activated(entry: &LoreEntry, scan: &Scan<'_>) -> bool {
    if !entry.keys.iter().any(|k| key_matches(entry, k, scan)) {
        return false;
    }
    // Secondary keys narrow a selective entry; the V3 spec ignores them for regex entries.
    if entry.selective && !entry.use_regex && !entry.secondary_keys.is_empty() {
        return entry
            .secondary_keys
            .iter()
            .any(|k| key_matches(entry, k, scan));
    }
    true
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
    let mut on: Vec<bool> = candidates
        .iter()
        .map(|e| e.constant || activated(e, &window))
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
            for (i, e) in candidates.iter().enumerate() {
                if !on[i] && activated(e, &scanned) {
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

/// The lore section at `position`, if any entry goes there.
pub fn lorebook(hits: &[LoreHit], position: LorePosition) -> Option<Component> {
    let texts: Vec<&str> = hits
        .iter()
        .filter(|h| h.position == position)
        .map(|h| h.content.as_str())
        .collect();
    if texts.is_empty() {
        return None;
    }
    let kind = match position {
        LorePosition::BeforeChar => ComponentKind::WorldInfoBefore,
        LorePosition::AfterChar => ComponentKind::WorldInfoAfter,
    };
    Some(Component::new(
        kind,
        format!("{}\n{}", kind.heading(), texts.join("\n\n")),
    ))
}

#[cfg(test)]
mod tests;
