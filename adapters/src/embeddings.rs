//! Embedding backends: any OpenAI-compatible `/v1/embeddings`, and the built-in hashing
//! embedder, and the vector math both share with the vector memories.

#[cfg(feature = "builtin")]
pub mod hashing;
#[cfg(feature = "openai")]
pub mod openai;

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

/// Scales `v` to unit length in place; a zero vector stays zero.
#[cfg(any(feature = "builtin", feature = "openai", feature = "sqlite"))]
pub(crate) fn l2_normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut()
            .for_each(|x| *x = (f64::from(*x) / norm) as f32);
    }
}
