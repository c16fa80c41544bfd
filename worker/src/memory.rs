//! Stage `memory_store`, after the reply has left: the user message and the reply, with
//! their emotions and embeddings, go to vector memory in ONE upsert (ids derived from the
//! turn, so a redelivered turn overwrites instead of duplicating), and the relationship
//! moves by the turn's emotions in one atomic, once-per-turn statement.
//!
//! Failure here is logged and counted (`memory_store_failed` in the turn's metric point); it
//! never un-sends the reply, and the turn is acked after this stage either succeeded or was
//! given up with that counted error — retrying a whole turn for a memory write would cost
//! more than the memory is worth.

use chrono::Utc;
use uuid::Uuid;
use whisperfleet_shared::character::{Relationship, RelationshipDelta};
use whisperfleet_shared::ports::characters::CharacterStore;
use whisperfleet_shared::ports::{
    Embedder, EmotionAnalyzer, EmotionResult, MemoryPoint, MemoryScope, VectorMemory,
};

pub fn point_id(turn_id: Uuid, role: &str) -> Uuid {
    Uuid::new_v5(&turn_id, role.as_bytes())
}

/// How a turn moves the relationship, from the user's emotion: warmth builds affection and
/// trust, hostility costs a little trust, sharing fear or sadness builds attunement (being
/// understood). Small steps, so a relationship develops over many turns; a pure function
/// of the message, so concurrent turns commute.
pub fn relationship_delta(user: &EmotionResult) -> RelationshipDelta {
    let i = user.intensity.clamp(0.0, 1.0);
    let mut d = RelationshipDelta {
        trust: 0.005,
        affection: 0.0,
        attunement: 0.005,
    };
    match user.primary.as_str() {
        "joy" | "optimism" | "anticipation" => {
            d.affection += 0.015 * i;
            d.trust += 0.005 * i;
        }
        "love" => d.affection += 0.03 * i,
        "trust" => d.trust += 0.02 * i,
        "sadness" | "fear" => {
            d.attunement += 0.02 * i;
            d.trust += 0.005 * i;
        }
        "anger" | "disgust" | "pessimism" => {
            d.trust -= 0.01 * i;
            d.affection -= 0.005 * i;
        }
        _ => {}
    }
    d
}

/// What one turn stores.
pub struct StoreInput<'a> {
    pub turn_id: Uuid,
    pub scope: &'a MemoryScope,
    pub channel_id: &'a str,
    pub is_dm: bool,
    pub user_text: &'a str,
    pub user_emotion: &'a EmotionResult,
    /// From the context stage; embedded again only if that failed.
    pub user_vector: Option<Vec<f32>>,
    pub reply_text: &'a str,
}

#[derive(Debug, Default)]
pub struct Stored {
    pub reply_emotion: Option<EmotionResult>,
    pub relationship: Option<Relationship>,
    pub failures: Vec<String>,
}

pub async fn store(
    memory: &dyn VectorMemory,
    embedder: &dyn Embedder,
    emotions: &dyn EmotionAnalyzer,
    characters: &dyn CharacterStore,
    input: StoreInput<'_>,
) -> Stored {
    let mut out = Stored::default();
    let reply_emotion = emotions.analyze(input.reply_text);
    let points = async {
        let mut texts = Vec::with_capacity(2);
        if input.user_vector.is_none() {
            texts.push(input.user_text.to_string());
        }
        texts.push(input.reply_text.to_string());
        let mut vectors = embedder
            .embed(&texts)
            .await
            .map_err(|e| format!("embedding: {e}"))?;
        let reply_vector = vectors.pop().ok_or("embedding: empty answer")?;
        let user_vector = match input.user_vector.clone() {
            Some(v) => v,
            None => vectors.pop().ok_or("embedding: empty answer")?,
        };
        let now = Utc::now();
        let point = |role: &str, text: &str, e: &EmotionResult, vector: Vec<f32>, ts| MemoryPoint {
            id: point_id(input.turn_id, role),
            character: input.scope.character.clone(),
            identity: input.scope.identity.clone(),
            role: role.to_string(),
            text: text.to_string(),
            emotion: e.primary.clone(),
            intensity: e.intensity,
            channel_id: input.channel_id.to_string(),
            is_dm: input.is_dm,
            timestamp: ts,
            vector,
        };
        let pts = [
            point(
                "user",
                input.user_text,
                input.user_emotion,
                user_vector,
                now,
            ),
            // A millisecond later, so "newest first" puts the reply after its message.
            point(
                "assistant",
                input.reply_text,
                &reply_emotion,
                reply_vector,
                now + chrono::Duration::milliseconds(1),
            ),
        ];
        memory
            .upsert(&pts)
            .await
            .map_err(|e| format!("memory upsert: {e}"))
    };
    let relationship = characters.apply_relationship(
        input.turn_id,
        &input.scope.identity,
        &input.scope.character,
        relationship_delta(input.user_emotion),
    );
    let (stored, moved) = tokio::join!(points, relationship);
    if let Err(e) = stored {
        out.failures.push(e);
    }
    match moved {
        Ok(r) => out.relationship = r,
        Err(e) => out.failures.push(format!("relationship: {e}")),
    }
    out.reply_emotion = Some(reply_emotion);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_stable_per_turn_and_role() {
        let t = Uuid::now_v7();
        assert_eq!(point_id(t, "user"), point_id(t, "user"));
        assert_ne!(point_id(t, "user"), point_id(t, "assistant"));
    }
}
