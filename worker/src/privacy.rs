//! Privacy over the ports: what is stored about one identity ([`show`]) and removing exactly
//! that identity's data ([`forget`]) — memories and their emotional states (vector memory),
//! relationships (character store), short-term history and cached per-turn LLM answers
//! (cache). The CLI's `memory show/forget` call it; so can a privacy request that reaches a
//! worker (HTTP `DELETE /v1/users/{id}`, Discord `/forget`).
//!
//! Exact by construction: every store is asked by the whole identity (platform, namespace,
//! user id) with exact matches, and the cache's keys come from the identity's index
//! ([`records::identity_index`]), never from a pattern, so ids holding `:`, `*`, `?`, `[` or
//! spaces select nobody else.

use whisperfleet_shared::character::{Relationship, normalize_name};
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::ports::cache::{Cache, CacheError};
use whisperfleet_shared::ports::characters::{CharacterStore, StoreError};
use whisperfleet_shared::ports::{MemoryError, MemoryPoint, VectorMemory};
use whisperfleet_shared::records;
use whisperfleet_shared::retry::{RetryAction, Retryable};

use crate::prompt::HistoryEntry;

/// Whose data, and with which character (all when `None`).
#[derive(Debug, Clone)]
pub struct Selector {
    pub identity: Identity,
    /// As the user would write it; normalized here.
    pub character: Option<String>,
}

impl Selector {
    fn character(&self) -> Option<String> {
        self.character.as_deref().map(normalize_name)
    }
}

/// The ports privacy works over; without a cache there is no history nor cached answers.
pub struct Ports<'a> {
    pub memory: &'a dyn VectorMemory,
    pub store: &'a dyn CharacterStore,
    pub cache: Option<&'a dyn Cache>,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl Retryable for PrivacyError {
    fn retry_action(&self) -> RetryAction {
        match self {
            Self::Memory(e) => e.retry_action(),
            Self::Store(e) => e.retry_action(),
            Self::Cache(e) => e.retry_action(),
        }
    }
}

impl PrivacyError {
    pub fn is_retryable(&self) -> bool {
        self.retry_action() != RetryAction::DontRetry
    }

    /// Which store failed, for the user (the details stay in the worker's log).
    pub fn for_people(&self) -> &'static str {
        match self {
            Self::Memory(_) => "the memory store failed; try again later",
            Self::Store(_) => "the relationship store failed; try again later",
            Self::Cache(_) => "the conversation cache failed; try again later",
        }
    }
}

/// Most memories `show` lists (newest first).
pub const SHOW_LIMIT: usize = 1000;

/// One conversation's short-term history.
#[derive(Debug)]
pub struct History {
    pub character: String,
    pub entries: Vec<HistoryEntry>,
}

/// What is stored about one identity.
#[derive(Debug, Default)]
pub struct Stored {
    /// Newest first, at most [`SHOW_LIMIT`]; each with its emotional state.
    pub memories: Vec<MemoryPoint>,
    pub histories: Vec<History>,
    /// By normalized character name.
    pub relationships: Vec<(String, Relationship)>,
    /// Turn ids whose LLM answer is cached.
    pub cached_answers: Vec<String>,
}

pub async fn show(ports: &Ports<'_>, sel: &Selector) -> Result<Stored, PrivacyError> {
    let character = sel.character();
    let memories = ports
        .memory
        .list(&sel.identity, character.as_deref(), SHOW_LIMIT)
        .await?;
    let relationships = ports
        .store
        .relationships_of(&sel.identity)
        .await?
        .into_iter()
        .filter(|(c, _)| character.as_ref().is_none_or(|want| want == c))
        .collect();
    let mut out = Stored {
        memories,
        relationships,
        ..Stored::default()
    };
    let Some(cache) = ports.cache else {
        return Ok(out);
    };
    for (c, key) in indexed(cache, sel, character.as_deref()).await? {
        if key.starts_with("hist:") {
            let entries: Vec<HistoryEntry> = cache
                .list_tail(&key, usize::MAX / 2)
                .await?
                .iter()
                .filter_map(|b| serde_json::from_slice(b).ok())
                .collect();
            if !entries.is_empty() {
                out.histories.push(History {
                    character: c,
                    entries,
                });
            }
        } else if let Some(turn) = key.strip_prefix("turn:")
            && cache.hash_get(&key, records::LLM).await?.is_some()
        {
            out.cached_answers.push(turn.to_string());
        }
    }
    out.cached_answers.sort();
    Ok(out)
}

/// How much [`forget`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub memories: u64,
    pub histories: u64,
    pub relationships: u64,
    pub cached_answers: u64,
}

/// Removes exactly `sel`'s memories, history, relationships and cached answers. A turn's
/// record keeps its other fields (replied, history appended…: markers with no user data),
/// so a redelivery of a forgotten turn still does not answer twice.
pub async fn forget(ports: &Ports<'_>, sel: &Selector) -> Result<Forgotten, PrivacyError> {
    let character = sel.character();
    let mut out = Forgotten::default();
    if let Some(cache) = ports.cache {
        let mut histories = Vec::new();
        for (_, key) in indexed(cache, sel, character.as_deref()).await? {
            if key.starts_with("hist:") {
                histories.push(key);
            } else if key.starts_with("turn:") {
                out.cached_answers += cache.hash_del(&key, &[records::LLM]).await?;
            }
        }
        histories.extend(legacy_histories(ports, sel, character.as_deref()).await?);
        for key in &histories {
            if !cache.list_tail(key, 1).await?.is_empty() {
                out.histories += 1;
            }
        }
        let keys: Vec<&str> = histories.iter().map(String::as_str).collect();
        cache.del(&keys).await?;
        if character.is_none() {
            cache
                .del(&[records::identity_index(&sel.identity).as_str()])
                .await?;
        }
    }
    out.memories = ports
        .memory
        .forget(&sel.identity, character.as_deref())
        .await?;
    out.relationships = ports
        .store
        .forget_user(&sel.identity, character.as_deref())
        .await?;
    Ok(out)
}

/// The (character, key) pairs of the identity's index, with `character` or all.
async fn indexed(
    cache: &dyn Cache,
    sel: &Selector,
    character: Option<&str>,
) -> Result<Vec<(String, String)>, PrivacyError> {
    let mut members: Vec<(String, String)> = cache
        .index_members(&records::identity_index(&sel.identity))
        .await?
        .iter()
        .filter_map(|m| records::parse_index_member(m))
        .filter(|(c, _)| character.is_none_or(|want| want == c))
        .map(|(c, key)| (c, key.to_string()))
        .collect();
    members.sort();
    Ok(members)
}

/// History lists written before conversation keys held the whole identity
/// (`hist:<platform>:<channel>:<user>:<character>`, unencoded; no prompt reads them any
/// more and they expire within [`records::HISTORY_TTL`] of the upgrade). Their exact names,
/// never a pattern, and only names that cannot be anyone else's: with no `:` inside a part
/// a name splits one way only, and its five parts never look like a current key (six). So
/// Discord's (numeric channels) and HTTP's colon-free channels are found, from the channels
/// the identity's memories know; names with `:` in a part (`dm:<user>`, `terminal:<user>`)
/// are left to expire. Only identities without a namespace had them.
async fn legacy_histories(
    ports: &Ports<'_>,
    sel: &Selector,
    character: Option<&str>,
) -> Result<Vec<String>, PrivacyError> {
    let id = &sel.identity;
    if !id.namespace.is_empty() || id.user_id.contains(':') || id.platform.contains(':') {
        return Ok(Vec::new());
    }
    let points = ports.memory.list(id, character, usize::MAX / 2).await?;
    let mut channels: Vec<&str> = points
        .iter()
        .map(|p| p.channel_id.as_str())
        .filter(|c| !c.contains(':'))
        .collect();
    channels.sort();
    channels.dedup();
    let mut characters: Vec<&str> = match character {
        Some(c) => vec![c],
        None => points.iter().map(|p| p.character.as_str()).collect(),
    };
    characters.retain(|c| !c.contains(':'));
    characters.sort();
    characters.dedup();
    let mut keys = Vec::new();
    for channel in &channels {
        for c in &characters {
            keys.push(format!("hist:{}:{channel}:{}:{c}", id.platform, id.user_id));
        }
    }
    Ok(keys)
}
