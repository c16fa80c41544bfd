//! [`HashEmbedder`], the built-in deterministic embedder the embedded fleet uses when no
//! embeddings service is configured (no model download, same vector for the same text in
//! every process).
//!
//! Feature hashing ("the hashing trick") over word unigrams, word bigrams and character
//! trigrams of each word, from lowercased text with punctuation removed. Each feature is
//! hashed with FNV-1a (64-bit, fixed offset and prime, then a murmur3 finaliser to spread the
//! bits), which picks a dimension and a sign; signed hashing makes collisions cancel out on
//! average instead of piling up. Counts are damped (`1 + ln tf`) so a repeated word does not
//! drown the rest, common function words weigh less, and the vector is L2-normalised. Texts
//! that share words or word pieces ("dog", "dog's") get a high cosine; this is lexical
//! similarity, not meaning, but it is good enough to retrieve "my dog is called Biscuit" for
//! "what is my dog's name?", and costs microseconds.

use std::collections::HashMap;

use async_trait::async_trait;
use whisperfleet_shared::ports::embedder::{EmbedError, Embedder};

use super::l2_normalise;

/// [`HashEmbedder::default`]'s dimensions: the size of common small sentence-embedding
/// models (e.g. all-MiniLM-L6-v2), so a vector collection sized for one fits the other.
pub const DEFAULT_HASH_DIMS: usize = 384;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::cosine;

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
}
