//! The two [`Embedder`] implementations: [`HashEmbedder`], the built-in deterministic
//! embedder the embedded fleet uses when no embeddings service is configured (no model
//! download, same vector for the same text in every process), and [`OpenAiEmbedder`], a
//! client for any OpenAI-compatible `POST /v1/embeddings` (OpenAI, Ollama, vLLM, TEI,
//! `whisperfleet mock-llm`). Plus [`cosine`], the similarity both are compared with.
//!
//! **Hash embeddings.** Feature hashing ("the hashing trick") over word unigrams, word
//! bigrams and character trigrams of each word, from lowercased text with punctuation
//! removed. Each feature is hashed with FNV-1a (64-bit, fixed offset and prime, then a
//! murmur3 finaliser to spread the bits), which picks a dimension and a sign; signed hashing
//! makes collisions cancel out on average instead of piling up. Counts are damped
//! (`1 + ln tf`) so a repeated word does not drown the rest, common function words weigh less,
//! and the vector is L2-normalised. Texts that share words or word pieces ("dog", "dog's")
//! get a high cosine; this is lexical similarity, not meaning, but it is good enough to
//! retrieve "my dog is called Biscuit" for "what is my dog's name?", and costs microseconds.
//!
//! **HTTP embeddings.** Same conventions as the chat client in [`crate::llm`]: one pooled
//! `reqwest::Client`, a per-attempt timeout, retries on timeouts, connection errors, 429 and
//! 5xx with full-jitter backoff ([`Backoff`]) that waits at least what `Retry-After` asks
//! (capped at `4 × backoff_max`), and the API key only ever exposed to build the
//! `Authorization` header — `Debug`, `describe`, logs and errors never contain it. Answers are
//! checked (one vector per input, ordered by `index`, each of the configured dimensions, all
//! finite) and L2-normalised, so either implementation can feed the same vector store.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use whisperfleet_shared::backoff::Backoff;
use whisperfleet_shared::http::{
    error_chain, openai_endpoint, redact_userinfo, retry_after_seconds,
};
use whisperfleet_shared::ports::{EmbedError, Embedder};

/// [`HashEmbedder::default`]'s dimensions: the size of common small sentence-embedding
/// models (e.g. all-MiniLM-L6-v2), so a vector collection sized for one fits the other.
pub const DEFAULT_HASH_DIMS: usize = 384;

/// Cosine similarity of two vectors, in `[-1, 1]`. Vectors of different lengths, and zero
/// vectors (the embedding of an empty text), have similarity 0: they match nothing.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0) as f32
}

/// FNV-1a, 64-bit: a fixed, documented hash (unlike std's `DefaultHasher`, whose algorithm
/// and keys may change), so hash embeddings stay comparable across processes and releases.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// murmur3's 64-bit finaliser: FNV's low bits are weak for short inputs, and the low bits
/// pick the dimension.
fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Scales `v` to unit length in place; a zero vector stays zero.
fn l2_normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut()
            .for_each(|x| *x = (f64::from(*x) / norm) as f32);
    }
}

/// Weight of a word unigram; function words get [`STOPWORD_WEIGHT`] instead.
const UNIGRAM_WEIGHT: f32 = 1.0;
const STOPWORD_WEIGHT: f32 = 0.2;
/// Weight of a word bigram (halved again when both words are function words).
const BIGRAM_WEIGHT: f32 = 0.6;
/// Norm of one word's block of character trigrams (each trigram gets this / √count), so long
/// words do not outweigh short ones.
const TRIGRAM_BLOCK_WEIGHT: f32 = 0.8;

/// Common English function words: they carry little of what a memory is about.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with",
    "from", "as", "is", "am", "are", "was", "were", "be", "been", "being", "do", "does", "did",
    "have", "has", "had", "i", "me", "my", "you", "your", "he", "him", "his", "she", "her", "it",
    "its", "we", "us", "our", "they", "them", "their", "this", "that", "these", "those", "what",
    "which", "who", "whom", "so", "than", "too", "very", "just", "can", "will", "would", "should",
    "could", "im", "about", "there", "here", "then", "not",
];

/// Deterministic feature-hashed embeddings; see the module docs. Cheap to build and to share.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dims: usize,
}

impl Default for HashEmbedder {
    fn default() -> Self {
        Self::new(DEFAULT_HASH_DIMS)
    }
}

impl HashEmbedder {
    /// An embedder producing `dims`-long vectors (at least 1).
    pub fn new(dims: usize) -> Self {
        Self { dims: dims.max(1) }
    }

    /// One text's vector: L2-normalised, or all zeros when the text has no words (empty,
    /// whitespace, punctuation only), which [`cosine`] scores 0 against everything.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let words = normalise_words(text);
        // Feature hash → (weight, count); sublinear tf needs the count per feature.
        let mut features: HashMap<u64, (f32, u32)> = HashMap::with_capacity(words.len() * 8);
        let mut add = |hash: u64, weight: f32| {
            let slot = features.entry(hash).or_insert((weight, 0));
            slot.1 += 1;
        };
        let mut buf = Vec::with_capacity(64);
        for (i, word) in words.iter().enumerate() {
            let stop = STOPWORDS.contains(&word.as_str());
            add(
                feature_hash(b'w', &[word.as_bytes()], &mut buf),
                if stop {
                    STOPWORD_WEIGHT
                } else {
                    UNIGRAM_WEIGHT
                },
            );
            if let Some(next) = words.get(i + 1) {
                let both_stop = stop && STOPWORDS.contains(&next.as_str());
                add(
                    feature_hash(b'b', &[word.as_bytes(), b" ", next.as_bytes()], &mut buf),
                    if both_stop {
                        BIGRAM_WEIGHT * 0.5
                    } else {
                        BIGRAM_WEIGHT
                    },
                );
            }
            // Trigrams of " word ", so prefixes and suffixes are features too.
            let padded: Vec<char> = std::iter::once(' ')
                .chain(word.chars())
                .chain(std::iter::once(' '))
                .collect();
            let count = padded.len().saturating_sub(2).max(1);
            let weight = TRIGRAM_BLOCK_WEIGHT / (count as f32).sqrt()
                * if stop { STOPWORD_WEIGHT } else { 1.0 };
            let mut tri = String::with_capacity(12);
            for window in padded.windows(3) {
                tri.clear();
                tri.extend(window);
                add(feature_hash(b'c', &[tri.as_bytes()], &mut buf), weight);
            }
        }

        let mut v = vec![0.0f32; self.dims];
        for (hash, (weight, count)) in features {
            let index = (hash % self.dims as u64) as usize;
            let sign = if hash >> 63 == 1 { -1.0 } else { 1.0 };
            v[index] += sign * weight * (1.0 + (count as f32).ln());
        }
        l2_normalise(&mut v);
        v
    }
}

/// The hash of one feature: a kind tag (`w`ord, `b`igram, `c`har trigram) so equal strings of
/// different kinds land apart, then the parts.
fn feature_hash(kind: u8, parts: &[&[u8]], buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    buf.push(kind);
    buf.push(b':');
    for part in parts {
        buf.extend_from_slice(part);
    }
    mix64(fnv1a64(buf))
}

/// Lowercased words with punctuation removed; a possessive "'s" is dropped ("dog's" → "dog")
/// and other apostrophes are squeezed out ("don't" → "dont").
fn normalise_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, words: &mut Vec<String>| {
        if word.is_empty() {
            return;
        }
        let w = word.strip_suffix("'s").unwrap_or(word).replace('\'', "");
        if !w.is_empty() {
            words.push(w);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if matches!(c, '\'' | '’' | 'ʼ') && !word.is_empty() {
            word.push('\'');
        } else {
            flush(&mut word, &mut words);
        }
    }
    flush(&mut word, &mut words);
    words
}

#[async_trait]
impl Embedder for HashEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Microseconds per text: not worth a spawn_blocking round trip.
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }

    fn dimensions(&self) -> usize {
        self.dims
    }

    fn describe(&self) -> String {
        format!(
            "built-in hash embedder ({} dims, word 1-2-grams + char 3-grams)",
            self.dims
        )
    }
}

/// A `Retry-After` longer than `backoff_max × RETRY_AFTER_CAP_FACTOR` is cut down to that: an
/// embedding sits on the turn's context path, and a turn without memories beats a late one.
pub const RETRY_AFTER_CAP_FACTOR: u32 = 4;

/// Inputs sent per request; longer batches are split. Well under OpenAI's 2048-input limit
/// and small enough for local servers.
pub const MAX_INPUTS_PER_REQUEST: usize = 256;

/// Server bodies quoted in errors are cut to this many characters.
const MAX_ERROR_BODY_CHARS: usize = 300;

/// How to reach an OpenAI-compatible embeddings endpoint.
///
/// `Debug` is derived on purpose: [`SecretString`] prints as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// Server root, e.g. `http://127.0.0.1:11434` or `https://api.openai.com`. A trailing
    /// slash, `/v1` or `/v1/embeddings` is tolerated; the client appends `/v1/embeddings`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<SecretString>,
    pub model: String,
    /// The model's vector length; answers of any other length are rejected, since the vector
    /// store's collection has a fixed size.
    pub dims: usize,
    /// Per attempt, covering connect, send and reading the whole answer.
    pub timeout: Duration,
    /// Extra attempts after the first one fails with a retryable error.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl EmbedderConfig {
    /// A config with defaults for the turn's context path: 10 s timeout, 2 retries,
    /// 100 ms–2 s backoff.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dims: usize) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            dims,
            timeout: Duration::from_secs(10),
            max_retries: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// The [`Embedder`] port over HTTP. Cheap to share behind an `Arc`.
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    /// Full `…/v1/embeddings` URL, credentials included if the config had any.
    request_url: String,
    /// `request_url` without userinfo, for `describe`, `Debug` and logs.
    endpoint_display: String,
    api_key: Option<SecretString>,
    model: String,
    dims: usize,
    timeout: Duration,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so neither the key nor URL credentials can leak through a `{:?}`.
        f.debug_struct("OpenAiEmbedder")
            .field("endpoint", &self.endpoint_display)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("model", &self.model)
            .field("dims", &self.dims)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed, classified for the retry loop.
#[derive(Debug)]
enum Failure {
    /// Timeouts, connection errors, 429, 5xx.
    Retryable {
        message: String,
        retry_after_s: Option<f64>,
    },
    /// Anything retrying will not fix.
    Fatal(EmbedError),
}

impl Failure {
    fn into_error(self) -> EmbedError {
        match self {
            Failure::Retryable { message, .. } => EmbedError::Unavailable(message),
            Failure::Fatal(err) => err,
        }
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
}

#[derive(Deserialize)]
struct WireResponse {
    data: Vec<WireEmbedding>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// Builds the client and its connection pool. Fails on an unusable `base_url`, zero
    /// `dims`, or if the HTTP client cannot be built.
    pub fn new(cfg: EmbedderConfig) -> Result<Self, EmbedError> {
        let request_url = embeddings_url(&cfg.base_url)?;
        if cfg.dims == 0 {
            return Err(EmbedError::Invalid(
                "embedding dims must be at least 1".into(),
            ));
        }
        // reqwest is built with `rustls-no-provider`; installing one is idempotent.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("whisperfleet/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| EmbedError::Unavailable(error_chain(&e.without_url())))?;
        Ok(Self {
            http,
            endpoint_display: redact_userinfo(&request_url),
            request_url,
            api_key: cfg.api_key.filter(|k| !k.expose_secret().is_empty()),
            model: cfg.model,
            dims: cfg.dims,
            timeout: cfg.timeout,
            max_retries: cfg.max_retries,
            backoff_base: cfg.backoff_base,
            backoff_max: cfg.backoff_max,
        })
    }

    /// The full embeddings URL requests go to (without credentials).
    pub fn endpoint(&self) -> &str {
        &self.endpoint_display
    }

    /// One batch with retries.
    async fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut backoff = Backoff::new(self.backoff_base, self.backoff_max);
        loop {
            match self.attempt(inputs).await {
                Ok(vectors) => return Ok(vectors),
                Err(Failure::Retryable {
                    message,
                    retry_after_s,
                }) if backoff.attempts() < self.max_retries => {
                    let mut wait = backoff.next_delay();
                    if let Some(secs) = retry_after_s {
                        let cap = self.backoff_max.saturating_mul(RETRY_AFTER_CAP_FACTOR);
                        let asked = Duration::try_from_secs_f64(secs).unwrap_or(cap).min(cap);
                        wait = wait.max(asked);
                    }
                    tracing::warn!(
                        endpoint = %self.endpoint_display,
                        attempt = backoff.attempts(),
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        error = %message,
                        "embedding request failed, retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(failure) => return Err(failure.into_error()),
            }
        }
    }

    /// One HTTP exchange, bounded by `self.timeout`.
    async fn attempt(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>, Failure> {
        let exchange = async {
            let mut req = self.http.post(&self.request_url).json(&WireRequest {
                model: &self.model,
                input: inputs,
            });
            if let Some(key) = &self.api_key {
                // `bearer_auth` marks the header sensitive for reqwest/hyper debug output.
                req = req.bearer_auth(key.expose_secret());
            }
            let resp = req.send().await.map_err(|e| self.transport_failure(e))?;
            let status = resp.status();
            let retry_after_s = retry_after_seconds(resp.headers());
            let bytes = resp.bytes().await.map_err(|e| self.transport_failure(e))?;
            if !status.is_success() {
                let message = format!("HTTP {}: {}", status.as_u16(), self.quote_body(&bytes));
                return Err(if status.as_u16() == 429 || status.is_server_error() {
                    Failure::Retryable {
                        message,
                        retry_after_s,
                    }
                } else {
                    Failure::Fatal(EmbedError::Unavailable(message))
                });
            }
            self.parse(&bytes, inputs.len()).map_err(Failure::Fatal)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Retryable {
                message: format!("timed out after {} ms", self.timeout.as_millis()),
                retry_after_s: None,
            }),
        }
    }

    /// Checks and normalises an answer to `expected` inputs.
    fn parse(&self, bytes: &[u8], expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let parsed: WireResponse = serde_json::from_slice(bytes)
            .map_err(|e| EmbedError::Invalid(format!("{e}; body: {}", self.quote_body(bytes))))?;
        if parsed.data.len() != expected {
            return Err(EmbedError::Invalid(format!(
                "asked for {expected} embeddings, got {}",
                parsed.data.len()
            )));
        }
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
        let indexed = parsed.data.iter().all(|d| d.index.is_some());
        for (position, item) in parsed.data.into_iter().enumerate() {
            // OpenAI orders by `index`; servers that omit it answer in input order.
            let i = if indexed {
                item.index.unwrap_or(position)
            } else {
                position
            };
            let slot = slots.get_mut(i).ok_or_else(|| {
                EmbedError::Invalid(format!("embedding index {i} out of range 0..{expected}"))
            })?;
            if slot.is_some() {
                return Err(EmbedError::Invalid(format!("embedding index {i} repeated")));
            }
            if item.embedding.len() != self.dims {
                return Err(EmbedError::Invalid(format!(
                    "embedding {i} has {} dimensions, expected {} (check the model and dims)",
                    item.embedding.len(),
                    self.dims
                )));
            }
            if !item.embedding.iter().all(|x| x.is_finite()) {
                return Err(EmbedError::Invalid(format!(
                    "embedding {i} has non-finite values"
                )));
            }
            let mut v = item.embedding;
            l2_normalise(&mut v);
            *slot = Some(v);
        }
        // Every slot is filled: `expected` distinct in-range indices were seen.
        Ok(slots.into_iter().flatten().collect())
    }

    fn transport_failure(&self, err: reqwest::Error) -> Failure {
        let message = if err.is_timeout() {
            format!("timed out after {} ms", self.timeout.as_millis())
        } else {
            // The URL is dropped: it is in `describe()` already and may carry credentials.
            error_chain(&err.without_url())
        };
        Failure::Retryable {
            message,
            retry_after_s: None,
        }
    }

    /// A server body made safe for an error: lossy UTF-8, key scrubbed, cut short.
    fn quote_body(&self, bytes: &[u8]) -> String {
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if let Some(key) = &self.api_key {
            text = text.replace(key.expose_secret(), "[REDACTED]");
        }
        let text = text.trim();
        if text.chars().count() <= MAX_ERROR_BODY_CHARS {
            return text.to_owned();
        }
        let mut out: String = text.chars().take(MAX_ERROR_BODY_CHARS - 1).collect();
        out.push('…');
        out
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    /// Blank texts get zero vectors without a request (servers reject empty input), like
    /// [`HashEmbedder`]; the rest go in batches of [`MAX_INPUTS_PER_REQUEST`].
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = vec![Vec::new(); texts.len()];
        let wanted: Vec<usize> = (0..texts.len())
            .filter(|&i| !texts[i].trim().is_empty())
            .collect();
        for i in (0..texts.len()).filter(|i| texts[*i].trim().is_empty()) {
            out[i] = vec![0.0; self.dims];
        }
        for chunk in wanted.chunks(MAX_INPUTS_PER_REQUEST) {
            let inputs: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
            let vectors = self.embed_batch(&inputs).await?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn dimensions(&self) -> usize {
        self.dims
    }

    fn describe(&self) -> String {
        format!(
            "openai-compatible embeddings at {} (model {}, {} dims)",
            self.endpoint_display, self.model, self.dims
        )
    }
}

/// `base_url` → `…/v1/embeddings`, accepting the forms people paste.
fn embeddings_url(base_url: &str) -> Result<String, EmbedError> {
    openai_endpoint(base_url, "embeddings")
        .map_err(|e| EmbedError::Invalid(format!("embeddings {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    use reqwest::header::{HeaderMap, RETRY_AFTER};

    use super::*;
    use crate::mock_llm::{self, MockLlmOptions};

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // From the FNV reference test suite; a change here would silently move every stored
        // hash embedding.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn hash_embedding_is_deterministic_and_normalised() {
        let e = HashEmbedder::default();
        let a = e.embed_one("My dog is called Biscuit!");
        assert_eq!(a.len(), DEFAULT_HASH_DIMS);
        assert_eq!(a, e.embed_one("My dog is called Biscuit!"));
        // Case and punctuation do not matter.
        assert_eq!(a, e.embed_one("my dog, is called biscuit"));
        assert!((norm(&a) - 1.0).abs() < 1e-5, "{}", norm(&a));
        // A golden value: the vector must not change between builds or processes (stored
        // memories would stop matching new queries).
        let golden = e.embed_one("hello world");
        assert_eq!(golden.iter().filter(|x| **x != 0.0).count(), 13);
        assert!(
            (golden[222] - HELLO_WORLD_222).abs() < 1e-4,
            "{}",
            golden[222]
        );
    }

    /// Component 222 of `embed_one("hello world")` at 384 dims (2 words, 1 bigram and 10
    /// trigrams: 13 features, no collisions).
    const HELLO_WORLD_222: f32 = 0.524_142;

    #[test]
    fn empty_text_is_the_zero_vector() {
        let e = HashEmbedder::new(16);
        for text in ["", "   ", "?!…"] {
            let v = e.embed_one(text);
            assert_eq!(v, vec![0.0; 16]);
            assert_eq!(cosine(&v, &e.embed_one("anything")), 0.0);
        }
    }

    #[test]
    fn related_texts_are_closer() {
        let e = HashEmbedder::default();
        let fact = e.embed_one("my dog is called Biscuit");
        let question = e.embed_one("what is my dog's name?");
        let other = e.embed_one("the stock market fell today");
        let near = cosine(&fact, &question);
        let far = cosine(&fact, &other);
        assert!(near > far + 0.1, "near {near} far {far}");
        assert!((cosine(&fact, &fact) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn cosine_edge_cases() {
        assert_eq!(cosine(&[], &[]), 0.0);
        assert_eq!(cosine(&[1.0, 0.0], &[1.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert!((cosine(&[1.0, 0.0], &[-2.0, 0.0]) + 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-6);
    }

    #[tokio::test]
    async fn hash_embedder_port() {
        let e = HashEmbedder::new(64);
        let texts = vec!["one".to_owned(), String::new(), "two".to_owned()];
        let out = e.embed(&texts).await.unwrap();
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|v| v.len() == 64));
        assert_eq!(out[0], e.embed_one("one"));
        assert_eq!(e.dimensions(), 64);
        assert!(e.describe().contains("64"));
    }

    fn config(base_url: String, dims: usize) -> EmbedderConfig {
        EmbedderConfig {
            timeout: Duration::from_secs(5),
            max_retries: 3,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..EmbedderConfig::new(base_url, "mock-embed", dims)
        }
    }

    #[tokio::test]
    async fn openai_embedder_against_the_mock() {
        let mock = mock_llm::spawn(MockLlmOptions::default()).await.unwrap();
        let client = OpenAiEmbedder::new(config(mock.base_url(), DEFAULT_HASH_DIMS)).unwrap();
        assert_eq!(
            client.endpoint(),
            format!("{}/v1/embeddings", mock.base_url())
        );
        let texts: Vec<String> = [
            "my dog is called Biscuit",
            "",
            "what is my dog's name?",
            "the stock market fell today",
        ]
        .map(String::from)
        .to_vec();
        let out = client.embed(&texts).await.unwrap();
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|v| v.len() == DEFAULT_HASH_DIMS));
        // The mock embeds with HashEmbedder, so the answers are meaningful and in order.
        let local = HashEmbedder::default();
        assert!(cosine(&out[0], &local.embed_one(&texts[0])) > 0.9999);
        assert!(cosine(&out[3], &local.embed_one(&texts[3])) > 0.9999);
        assert_eq!(out[1], vec![0.0; DEFAULT_HASH_DIMS]);
        assert!((norm(&out[2]) - 1.0).abs() < 1e-4);
        assert!(cosine(&out[0], &out[2]) > cosine(&out[0], &out[3]));
        // One request for the three non-blank texts; chat completions are counted apart.
        assert_eq!(mock.stats.embedding_requests(), 1);
        assert_eq!(mock.stats.requests(), 0);
        // Nothing to embed, nothing sent.
        assert!(client.embed(&[]).await.unwrap().is_empty());
        assert_eq!(mock.stats.embedding_requests(), 1);
    }

    #[tokio::test]
    async fn wrong_dimensions_are_rejected() {
        let mock = mock_llm::spawn(MockLlmOptions::default()).await.unwrap();
        let client = OpenAiEmbedder::new(config(mock.base_url(), 1536)).unwrap();
        let err = client.embed(&["hi".to_owned()]).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Invalid(m) if m.contains("384") && m.contains("1536")),
            "{err:?}"
        );
        // Not retried: another attempt would get the same answer.
        assert_eq!(mock.stats.embedding_requests(), 1);
    }

    #[test]
    fn config_errors() {
        assert!(OpenAiEmbedder::new(config("not a url".into(), 8)).is_err());
        assert!(OpenAiEmbedder::new(config("ftp://example.com".into(), 8)).is_err());
        assert!(OpenAiEmbedder::new(config("http://127.0.0.1:1".into(), 0)).is_err());
        for suffix in ["", "/", "/v1", "/v1/", "/v1/embeddings"] {
            let c = OpenAiEmbedder::new(config(format!("http://h:1{suffix}"), 8)).unwrap();
            assert_eq!(c.endpoint(), "http://h:1/v1/embeddings");
        }
    }

    /// A scripted embeddings server: answers the first `fail` requests with `status` (and
    /// `Retry-After: retry_after`), then echoes valid 4-dim embeddings in reverse order (with
    /// indices) to check the client reorders them. Returns its base URL and request counter.
    async fn scripted_server(
        fail: u32,
        status: u16,
        retry_after: Option<&'static str>,
        delay: Duration,
    ) -> (String, Arc<AtomicU32>) {
        let count = Arc::new(AtomicU32::new(0));
        let seen = count.clone();
        let app = axum::Router::new().route(
            "/v1/embeddings",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::Json<serde_json::Value>| {
                    let seen = seen.clone();
                    async move {
                        let n = seen.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        if n < fail {
                            let auth = headers
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let mut resp = (
                                StatusCode::from_u16(status).unwrap(),
                                format!("failure {n}; you sent {auth}"),
                            )
                                .into_response();
                            if let Some(ra) = retry_after {
                                resp.headers_mut()
                                    .insert("retry-after", ra.parse().unwrap());
                            }
                            return resp;
                        }
                        let inputs = body["input"].as_array().cloned().unwrap_or_default();
                        let data: Vec<serde_json::Value> = inputs
                            .iter()
                            .enumerate()
                            .rev()
                            .map(|(i, _)| {
                                serde_json::json!({
                                    "object": "embedding",
                                    "index": i,
                                    "embedding": [i as f32 + 1.0, 0.0, 0.0, 3.0],
                                })
                            })
                            .collect();
                        axum::Json(serde_json::json!({ "object": "list", "data": data }))
                            .into_response()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), count)
    }

    #[tokio::test]
    async fn answers_are_reordered_by_index_and_normalised() {
        let (url, _) = scripted_server(0, 500, None, Duration::ZERO).await;
        let client = OpenAiEmbedder::new(config(url, 4)).unwrap();
        let out = client
            .embed(&["a".to_owned(), "b".to_owned()])
            .await
            .unwrap();
        // Index 0 → [1,0,0,3]/√10, index 1 → [2,0,0,3]/√13.
        assert!((out[0][0] - 1.0 / 10f32.sqrt()).abs() < 1e-6, "{out:?}");
        assert!((out[1][0] - 2.0 / 13f32.sqrt()).abs() < 1e-6, "{out:?}");
    }

    #[tokio::test]
    async fn retries_5xx_then_succeeds() {
        let (url, count) = scripted_server(2, 503, None, Duration::ZERO).await;
        let client = OpenAiEmbedder::new(config(url, 4)).unwrap();
        client.embed(&["x".to_owned()]).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let (url, count) = scripted_server(100, 500, None, Duration::ZERO).await;
        let mut cfg = config(url, 4);
        cfg.max_retries = 2;
        let client = OpenAiEmbedder::new(cfg).unwrap();
        let err = client.embed(&["x".to_owned()]).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Unavailable(m) if m.contains("500")),
            "{err:?}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn honours_retry_after() {
        let (url, count) = scripted_server(1, 429, Some("1"), Duration::ZERO).await;
        let mut cfg = config(url, 4);
        // The cap (4 × backoff_max) must allow a 1 s Retry-After.
        cfg.backoff_max = Duration::from_millis(500);
        let client = OpenAiEmbedder::new(cfg).unwrap();
        let started = Instant::now();
        client.embed(&["x".to_owned()]).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let (url, count) = scripted_server(5, 400, None, Duration::ZERO).await;
        let client = OpenAiEmbedder::new(config(url, 4)).unwrap();
        let err = client.embed(&["x".to_owned()]).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Unavailable(m) if m.contains("400")),
            "{err:?}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn timeouts_are_retried_then_reported() {
        let (url, count) = scripted_server(0, 500, None, Duration::from_secs(3)).await;
        let mut cfg = config(url, 4);
        cfg.timeout = Duration::from_millis(150);
        cfg.max_retries = 1;
        let client = OpenAiEmbedder::new(cfg).unwrap();
        let err = client.embed(&["x".to_owned()]).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Unavailable(m) if m.contains("timed out")),
            "{err:?}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let mut cfg = config(format!("http://{addr}"), 4);
        cfg.max_retries = 1;
        let client = OpenAiEmbedder::new(cfg).unwrap();
        let err = client.embed(&["x".to_owned()]).await.unwrap_err();
        assert!(matches!(err, EmbedError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn key_is_sent_as_bearer_and_never_shown() {
        const KEY: &str = "sk-embed-secret-98765";
        let (url, _) = scripted_server(100, 401, None, Duration::ZERO).await;
        let mut cfg = config(url, 4);
        cfg.api_key = Some(SecretString::from(KEY));
        assert!(!format!("{cfg:?}").contains(KEY));
        let client = OpenAiEmbedder::new(cfg).unwrap();
        assert!(!format!("{client:?}").contains(KEY));
        assert!(!client.describe().contains(KEY));
        let err = client.embed(&["x".to_owned()]).await.unwrap_err();
        let text = err.to_string();
        // The server echoed the header; the client scrubbed the key from the quoted body.
        assert!(text.contains("Bearer [REDACTED]"), "{text}");
        assert!(!text.contains(KEY));
        assert!(!format!("{err:?}").contains(KEY));
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after_seconds(&h), None);
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after_seconds(&h), Some(2.0));
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after_seconds(&h), Some(0.0));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after_seconds(&h), Some(0.25));
    }
}
