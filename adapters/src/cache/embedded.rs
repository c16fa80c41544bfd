//! The in-process [`Cache`]: what `whisperfleet up` / `chat` use when no Redis URL is set.
//! One instance is shared by the gateway and the workers of that one process.
//!
//! It keeps Redis's semantics for everything the pipeline relies on, so the pipeline cannot
//! tell the two apart (the contract in `whisperfleet_testkit::contracts::cache` runs against both):
//! millisecond TTLs after which a key is invisible, `SET NX`, `append_once` exactly like the
//! Lua script of [`whisperfleet_shared::ports::cache::RedisCache`], `LRANGE`-style tails, and Redis's own glob
//! matching (`stringmatchlen`) for deletion by pattern, and heartbeat registries scored like a sorted set.
//!
//! Memory stays bounded: expired keys are removed as writes pass their expiry time (a
//! min-heap of deadlines, so no periodic full scan stalls callers), and above `max_entries`
//! the keys closest to expiry are evicted first (Redis's `volatile-ttl`; every key here has a
//! TTL). All state sits behind one `std::sync::Mutex` that is never held across an await.

use std::cmp::Reverse;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use whisperfleet_shared::ports::cache::{Appended, Cache, CacheError};

/// Default bound on live keys: about a day of turns (a handful of per-turn keys each) for one
/// process, far below what would strain its memory.
pub const DEFAULT_MAX_ENTRIES: usize = 250_000;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

enum Value {
    Bytes(Vec<u8>),
    /// Never empty: like Redis, a list without elements does not exist.
    List(VecDeque<Vec<u8>>),
    Hash(HashMap<String, Vec<u8>>),
    /// A heartbeat registry (Redis: a sorted set scored by heartbeat time): member → last beat.
    Registry(HashMap<String, Instant>),
    /// An index (Redis: a sorted set scored by expiry): member → when it expires.
    Index(HashMap<String, Instant>),
}

struct Entry {
    value: Value,
    expires_at: Instant,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Deadlines of entries, soonest first. An item is stale when its entry was rewritten
    /// with another deadline (or removed); stale items are skipped when popped and dropped
    /// wholesale by `compact`, so the heap stays within a constant factor of the map.
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
    evicted: u64,
}

impl State {
    /// The live entry under `key`; an expired one is removed on the way (as Redis does on
    /// access).
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| e.expires_at <= now) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn put(&mut self, key: &str, value: Value, expires_at: Instant) {
        self.entries
            .insert(key.to_string(), Entry { value, expires_at });
        self.deadlines.push(Reverse((expires_at, key.to_string())));
    }

    /// The hash under `key`, created (with a placeholder deadline the caller sets) when
    /// missing; another type is Redis's WRONGTYPE.
    fn hash(
        &mut self,
        key: &str,
        now: Instant,
    ) -> Result<&mut HashMap<String, Vec<u8>>, CacheError> {
        if self.live(key, now).is_none() {
            self.put(
                key,
                Value::Hash(HashMap::new()),
                now + Duration::from_secs(1),
            );
        }
        match self.entries.get_mut(key) {
            Some(Entry {
                value: Value::Hash(h),
                ..
            }) => Ok(h),
            _ => Err(CacheError::Command(WRONGTYPE.into())),
        }
    }

    fn set_deadline(&mut self, key: &str, expires_at: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.expires_at = expires_at;
            self.deadlines.push(Reverse((expires_at, key.to_string())));
        }
    }

    /// Removes the entry a popped heap item refers to, unless the item is stale.
    fn remove_if_current(&mut self, at: Instant, key: String) -> bool {
        match self.entries.entry(key) {
            MapEntry::Occupied(o) if o.get().expires_at == at => {
                o.remove();
                true
            }
            _ => false,
        }
    }

    /// Housekeeping after a write: expire what is due, evict above the bound, and keep the
    /// heap from filling up with stale deadlines.
    fn maintain(&mut self, now: Instant, max_entries: usize) {
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.deadlines.pop() else {
                break;
            };
            self.remove_if_current(at, key);
        }
        while self.entries.len() > max_entries {
            let Some(Reverse((at, key))) = self.deadlines.pop() else {
                break;
            };
            if self.remove_if_current(at, key) {
                self.evicted += 1;
            }
        }
        if self.deadlines.len() > 2 * self.entries.len() + 64 {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.deadlines = self
            .entries
            .iter()
            .map(|(k, e)| Reverse((e.expires_at, k.clone())))
            .collect();
    }
}

pub struct EmbeddedCache {
    state: Mutex<State>,
    max_entries: usize,
}

impl Default for EmbeddedCache {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedCache {
    pub fn new() -> Self {
        Self::with_max_entries(DEFAULT_MAX_ENTRIES)
    }

    /// At most `max_entries` live keys; beyond that the keys closest to expiry go first.
    pub fn with_max_entries(max_entries: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_entries: max_entries.max(1),
        }
    }

    /// Keys held right now, including expired ones not yet swept (for tests and stats).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many live keys were evicted to stay within `max_entries`.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything can panic, so a
        // poisoned lock holds usable data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A lease value, `<until_ms> <holder>`.
fn parse_lease(v: &[u8]) -> Option<(u64, &str)> {
    let s = std::str::from_utf8(v).ok()?;
    let (until, who) = s.split_once(' ')?;
    Some((until.parse().ok()?, who))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Redis stores PX milliseconds and the Redis implementation sends at least 1.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now + ttl.max(Duration::from_millis(1))
}

#[async_trait]
impl Cache for EmbeddedCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut st = self.lock();
        match st.live(key, Instant::now()) {
            None => Ok(None),
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) => Ok(Some(b.clone())),
            Some(_) => Err(CacheError::Command(WRONGTYPE.into())),
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut st = self.lock();
        st.put(key, Value::Bytes(value.to_vec()), deadline(now, ttl));
        st.maintain(now, self.max_entries);
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut st = self.lock();
        if st.live(key, now).is_some() {
            return Ok(false);
        }
        st.put(key, Value::Bytes(value.to_vec()), deadline(now, ttl));
        st.maintain(now, self.max_entries);
        Ok(true)
    }

    async fn del(&self, keys: &[&str]) -> Result<(), CacheError> {
        let mut st = self.lock();
        for k in keys {
            st.entries.remove(*k);
        }
        Ok(())
    }

    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, Vec<u8>>, CacheError> {
        let mut st = self.lock();
        match st.live(key, Instant::now()) {
            None => Ok(HashMap::new()),
            Some(Entry {
                value: Value::Hash(h),
                ..
            }) => Ok(h.clone()),
            Some(_) => Err(CacheError::Command(WRONGTYPE.into())),
        }
    }

    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut st = self.lock();
        match st.live(key, Instant::now()) {
            None => Ok(None),
            Some(Entry {
                value: Value::Hash(h),
                ..
            }) => Ok(h.get(field).cloned()),
            Some(_) => Err(CacheError::Command(WRONGTYPE.into())),
        }
    }

    async fn hash_set(
        &self,
        key: &str,
        field: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut st = self.lock();
        st.hash(key, now)?.insert(field.to_string(), value.to_vec());
        st.set_deadline(key, deadline(now, ttl));
        st.maintain(now, self.max_entries);
        Ok(())
    }

    async fn lease(
        &self,
        key: &str,
        field: &str,
        holder: &str,
        lease: Duration,
        ttl: Duration,
    ) -> Result<Option<String>, CacheError> {
        let now = Instant::now();
        let wall = unix_ms();
        let mut st = self.lock();
        let h = st.hash(key, now)?;
        if let Some((until, who)) = h.get(field).and_then(|v| parse_lease(v))
            && who != holder
            && until > wall
        {
            return Ok(Some(who.to_string()));
        }
        let until = wall + lease.as_millis().max(1) as u64;
        h.insert(field.to_string(), format!("{until} {holder}").into_bytes());
        st.set_deadline(key, deadline(now, ttl));
        st.maintain(now, self.max_entries);
        Ok(None)
    }

    async fn release(&self, key: &str, field: &str, holder: &str) -> Result<(), CacheError> {
        let mut st = self.lock();
        if let Some(Entry {
            value: Value::Hash(h),
            ..
        }) = st.live(key, Instant::now())
            && h.get(field)
                .and_then(|v| parse_lease(v))
                .is_some_and(|(_, who)| who == holder)
        {
            h.remove(field);
            if h.is_empty() {
                st.entries.remove(key);
            }
        }
        Ok(())
    }

    async fn append_once(
        &self,
        list: &str,
        entries: &[Vec<u8>],
        keep: usize,
        list_ttl: Duration,
        record: &str,
        done: &str,
        unless: &str,
        record_ttl: Duration,
    ) -> Result<Appended, CacheError> {
        let now = Instant::now();
        let mut st = self.lock();
        match st.live(record, now) {
            Some(Entry {
                value: Value::Hash(h),
                ..
            }) => {
                if h.contains_key(unless) {
                    return Ok(Appended::Refused);
                }
                if h.contains_key(done) {
                    return Ok(Appended::AlreadyDone);
                }
            }
            Some(_) => return Err(CacheError::Command(WRONGTYPE.into())),
            None => {}
        }
        // Checked before anything changes: Redis would fail the RPUSH after having set the
        // marker, which is a state not worth reproducing.
        if matches!(st.live(list, now), Some(e) if !matches!(e.value, Value::List(_))) {
            return Err(CacheError::Command(WRONGTYPE.into()));
        }
        st.hash(record, now)?
            .insert(done.to_string(), b"1".to_vec());
        st.set_deadline(record, deadline(now, record_ttl));
        // Like the script: without entries, RPUSH never runs, LTRIM and PEXPIRE of a missing
        // list do nothing, and an existing list still has its TTL refreshed.
        let keep = keep.max(1);
        let existed = match st.live(list, now) {
            Some(Entry {
                value: Value::List(items),
                ..
            }) => {
                items.extend(entries.iter().cloned());
                let excess = items.len().saturating_sub(keep);
                items.drain(..excess);
                true
            }
            _ => false,
        };
        if existed {
            st.set_deadline(list, deadline(now, list_ttl));
        } else if !entries.is_empty() {
            let start = entries.len().saturating_sub(keep);
            let items = entries[start..].iter().cloned().collect();
            st.put(list, Value::List(items), deadline(now, list_ttl));
        }
        st.maintain(now, self.max_entries);
        Ok(Appended::Appended)
    }

    async fn mark_and_prune(
        &self,
        record: &str,
        field: &str,
        value: &[u8],
        record_ttl: Duration,
        list: &str,
        needle: &str,
    ) -> Result<u64, CacheError> {
        let now = Instant::now();
        let mut st = self.lock();
        if matches!(st.live(list, now), Some(e) if !matches!(e.value, Value::List(_))) {
            return Err(CacheError::Command(WRONGTYPE.into()));
        }
        st.hash(record, now)?
            .insert(field.to_string(), value.to_vec());
        st.set_deadline(record, deadline(now, record_ttl));
        let mut removed = 0;
        let mut now_empty = false;
        if let Some(Entry {
            value: Value::List(items),
            ..
        }) = st.live(list, now)
        {
            let needle = needle.as_bytes();
            let before = items.len();
            items.retain(|i| !contains(i, needle));
            removed = (before - items.len()) as u64;
            now_empty = items.is_empty();
        }
        if now_empty {
            st.entries.remove(list);
        }
        st.maintain(now, self.max_entries);
        Ok(removed)
    }

    async fn list_tail(&self, list: &str, n: usize) -> Result<Vec<Vec<u8>>, CacheError> {
        let mut st = self.lock();
        match st.live(list, Instant::now()) {
            None => Ok(Vec::new()),
            Some(Entry {
                value: Value::List(items),
                ..
            }) => Ok(items
                .iter()
                .skip(items.len().saturating_sub(n))
                .cloned()
                .collect()),
            Some(_) => Err(CacheError::Command(WRONGTYPE.into())),
        }
    }

    async fn hash_del(&self, key: &str, fields: &[&str]) -> Result<u64, CacheError> {
        let mut st = self.lock();
        let removed = match st.live(key, Instant::now()) {
            None => return Ok(0),
            Some(Entry {
                value: Value::Hash(h),
                ..
            }) => {
                let n = fields.iter().filter(|f| h.remove(**f).is_some()).count();
                (n as u64, h.is_empty())
            }
            Some(_) => return Err(CacheError::Command(WRONGTYPE.into())),
        };
        // Like Redis, a hash without fields does not exist.
        if removed.1 {
            st.entries.remove(key);
        }
        Ok(removed.0)
    }

    async fn index_add(
        &self,
        index: &str,
        members: &[(String, Duration)],
    ) -> Result<(), CacheError> {
        if members.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let longest = members.iter().map(|(_, ttl)| deadline(now, *ttl)).max();
        let mut st = self.lock();
        let current = match st.live(index, now) {
            None => None,
            Some(Entry {
                value: Value::Index(m),
                expires_at,
            }) => {
                for (member, ttl) in members {
                    let until = deadline(now, *ttl);
                    let e = m.entry(member.clone()).or_insert(until);
                    *e = (*e).max(until);
                }
                m.retain(|_, until| *until > now);
                Some(*expires_at)
            }
            Some(_) => return Err(CacheError::Command(WRONGTYPE.into())),
        };
        let longest = longest.expect("members is not empty");
        match current {
            Some(at) if at >= longest => {}
            Some(_) => st.set_deadline(index, longest),
            None => {
                let m = members
                    .iter()
                    .map(|(member, ttl)| (member.clone(), deadline(now, *ttl)))
                    .collect();
                st.put(index, Value::Index(m), longest);
            }
        }
        st.maintain(now, self.max_entries);
        Ok(())
    }

    async fn index_members(&self, index: &str) -> Result<Vec<String>, CacheError> {
        let now = Instant::now();
        let mut st = self.lock();
        match st.live(index, now) {
            None => Ok(Vec::new()),
            Some(Entry {
                value: Value::Index(m),
                ..
            }) => Ok(m
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(member, _)| member.clone())
                .collect()),
            Some(_) => Err(CacheError::Command(WRONGTYPE.into())),
        }
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64, CacheError> {
        let now = Instant::now();
        let mut st = self.lock();
        let before = st.entries.len();
        let mut expired = 0u64;
        st.entries.retain(|k, e| {
            if e.expires_at <= now {
                expired += 1;
                return false;
            }
            !glob_match(pattern.as_bytes(), k.as_bytes())
        });
        // Expired keys were swept on the way but never counted: to callers they are gone.
        Ok((before - st.entries.len()) as u64 - expired)
    }

    async fn heartbeat(
        &self,
        registry: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut st = self.lock();
        match st.live(registry, now) {
            Some(Entry {
                value: Value::Registry(members),
                ..
            }) => {
                members.insert(member.to_string(), now);
                st.set_deadline(registry, deadline(now, ttl));
            }
            Some(_) => return Err(CacheError::Command(WRONGTYPE.into())),
            None => {
                let members = HashMap::from([(member.to_string(), now)]);
                st.put(registry, Value::Registry(members), deadline(now, ttl));
            }
        }
        st.maintain(now, self.max_entries);
        Ok(())
    }

    async fn alive(&self, registry: &str, max_age: Duration) -> Result<Vec<String>, CacheError> {
        let now = Instant::now();
        let mut st = self.lock();
        let members = match st.live(registry, now) {
            None => return Ok(Vec::new()),
            Some(Entry {
                value: Value::Registry(members),
                ..
            }) => members,
            Some(_) => return Err(CacheError::Command(WRONGTYPE.into())),
        };
        members.retain(|_, beat| now.duration_since(*beat) < max_age);
        let alive = members.keys().cloned().collect();
        // Like a sorted set, a registry without members does not exist.
        if members.is_empty() {
            st.entries.remove(registry);
        }
        Ok(alive)
    }

    fn describe(&self) -> String {
        "embedded".into()
    }

    fn is_shared(&self) -> bool {
        false
    }
}

/// Redis's `stringmatchlen` (util.c), byte for byte: `*`, `?`, `[abc]`, `[^a-z]` (reversed
/// ranges allowed, `\` escapes inside), `\x` for a literal `x`. An unterminated `[` takes the
/// rest of the pattern as its class, `[]` matches nothing, and a trailing `\` is literal.
///
/// Keys are matched as [`whisperfleet_shared::ports::cache::RedisCache`] matches them: behind its prefix, which
/// only matters for the empty key (Redis alone says `*` does not match it; after a prefix it
/// does, like any pattern of only stars).
pub fn glob_match(pattern: &[u8], key: &[u8]) -> bool {
    if key.is_empty() {
        return pattern.iter().all(|&c| c == b'*');
    }
    let mut skip_longer = false;
    glob(pattern, key, &mut skip_longer, 0)
}

/// The byte at `i`, or NUL past the end (Redis reads the terminator of its C strings).
fn at(p: &[u8], i: usize) -> u8 {
    p.get(i).copied().unwrap_or(0)
}

fn glob(mut p: &[u8], mut s: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    // Redis's guard against abusive patterns.
    if nesting > 1000 {
        return false;
    }
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while at(p, 1) == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if glob(&p[1..], s, skip_longer, nesting + 1) {
                        return true;
                    }
                    // The rest already failed at every later start: a longer match of this
                    // star cannot help (keeps `*a*a*a…` linear instead of exponential).
                    if *skip_longer {
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                p = &p[1..];
                let negate = at(p, 0) == b'^';
                if negate {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    if at(p, 0) == b'\\' && p.len() >= 2 {
                        p = &p[1..];
                        matched |= p[0] == s[0];
                    } else if at(p, 0) == b']' || p.is_empty() {
                        break;
                    } else if p.len() >= 3 && p[1] == b'-' {
                        // C `char` is signed on Redis's platforms; compare the same way.
                        let (a, b) = (p[0] as i8, p[2] as i8);
                        let (lo, hi) = if a > b { (b, a) } else { (a, b) };
                        let c = s[0] as i8;
                        p = &p[2..];
                        matched |= lo <= c && c <= hi;
                    } else {
                        matched |= p[0] == s[0];
                    }
                    p = &p[1..];
                }
                if matched == negate {
                    return false;
                }
                s = &s[1..];
            }
            b'\\' => {
                if p.len() >= 2 {
                    p = &p[1..];
                }
                if p[0] != s[0] {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if c != s[0] {
                    return false;
                }
                s = &s[1..];
            }
        }
        // Past the closing `]` (or stays at the end of an unterminated class).
        p = p.get(1..).unwrap_or(&[]);
        if s.is_empty() {
            while at(p, 0) == b'*' {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        glob_match(p.as_bytes(), s.as_bytes())
    }

    #[test]
    fn glob_follows_redis() {
        assert!(m("*", ""));
        assert!(m("*", "abc"));
        assert!(m("a*", "a"));
        assert!(m("a**b", "axxb"));
        assert!(!m("a*b", "axxc"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed range");
        assert!(m(r"h\*llo", "h*llo"));
        assert!(!m(r"h\*llo", "hello"));
        assert!(m(r"h[\]]llo", "h]llo"));
        assert!(!m("h[]llo", "h]llo"), "[] is an empty class");
        assert!(m("h[ab", "hb"), "unterminated class takes the rest");
        assert!(!m("h[ab", "hbx"));
        assert!(!m("a[", "ab"));
        assert!(m("a[^", "ab"));
        assert!(m(r"a\", r"a\"), "trailing backslash is literal");
        assert!(m("hist:*:*:u1:*", "hist:web:c1:u1:vellum"));
        assert!(!m("hist:*:*:u1:*", "hist:web:c1:u10:vellum"));
        assert!(m("a*", "a*"));
        assert!(!m("", "a"));
        assert!(m("", ""));
        // Pathological pattern stays fast.
        let long = "a".repeat(60);
        assert!(!m(&format!("{}b", "*a".repeat(30)), &long));
    }

    #[tokio::test]
    async fn expired_keys_are_swept_on_later_writes() {
        let c = EmbeddedCache::new();
        for i in 0..100 {
            c.set(&format!("k{i}"), b"v", Duration::from_millis(20))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        c.set("other", b"v", Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.len(), 1);
    }

    #[tokio::test]
    async fn rewrites_do_not_grow_the_deadline_heap() {
        let c = EmbeddedCache::new();
        for _ in 0..10_000 {
            c.set("k", b"v", Duration::from_secs(60)).await.unwrap();
        }
        assert!(c.lock().deadlines.len() <= 2 + 64);
    }

    #[tokio::test]
    async fn evicts_the_soonest_expiring_beyond_the_bound() {
        let c = EmbeddedCache::with_max_entries(3);
        c.set("short", b"v", Duration::from_secs(10)).await.unwrap();
        for k in ["a", "b", "c"] {
            c.set(k, b"v", Duration::from_secs(60)).await.unwrap();
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.evicted(), 1);
        assert_eq!(c.get("short").await.unwrap(), None);
        assert!(c.get("a").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn wrong_types_are_refused_like_redis() {
        let c = EmbeddedCache::new();
        let ttl = Duration::from_secs(5);
        c.set("s", b"v", ttl).await.unwrap();
        assert!(c.list_tail("s", 1).await.is_err());
        assert!(
            c.append_once("s", &[b"x".to_vec()], 5, ttl, "m", "done", "no", ttl)
                .await
                .is_err()
        );
        assert!(
            c.hash_get_all("m").await.unwrap().is_empty(),
            "no marker left behind"
        );
        c.append_once("l", &[b"x".to_vec()], 5, ttl, "m", "done", "no", ttl)
            .await
            .unwrap();
        assert!(c.get("l").await.is_err());
        assert!(c.get("m").await.is_err());
        assert!(c.hash_get_all("l").await.is_err());
    }

    #[tokio::test]
    async fn append_without_entries_sets_the_marker_only() {
        let c = EmbeddedCache::new();
        let ttl = Duration::from_secs(5);
        let append = || c.append_once("l", &[], 5, ttl, "m", "done", "no", ttl);
        assert_eq!(append().await.unwrap(), Appended::Appended);
        assert_eq!(c.len(), 1);
        assert_eq!(append().await.unwrap(), Appended::AlreadyDone);
    }
}
