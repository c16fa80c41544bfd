//! Stage `compose`: the six CDL components (Character Identity, Character Mode, AI Identity
//! Guidance, Character Personality, Character Voice, Final Response Guidance) plus the
//! per-turn context components, assembled into the chat messages under a token budget.
//!
//! Each component asks `load` for the character. In the optimized pipeline `load` hands out
//! the one character loaded in `cdl_load` and the components are built concurrently; the
//! bench's naive pipeline passes an uncached store load and `parallel = false`, which is the
//! seed's "each component factory queries PostgreSQL, one after another" reproduced by
//! configuration. An optional component that fails is left out (the turn degrades); a
//! required one (identity, mode, final guidance) fails the stage.

use std::future::Future;
use std::sync::Arc;

use whisperfleet_shared::character::Character;
use whisperfleet_shared::ports::characters::StoreError;
use whisperfleet_shared::ports::llm::ChatMessage;

use crate::prompt::{
    self as components, Component, EmotionSummary, HistoryEntry, MemorySnippet, RelationshipSummary,
};

/// Everything but the character that goes into a prompt.
#[derive(Debug, Clone, Default)]
pub struct ComposeContext {
    pub user_name: String,
    pub user_text: String,
    pub history: Vec<HistoryEntry>,
    pub memories: Vec<MemorySnippet>,
    pub user_emotion: Option<EmotionSummary>,
    pub trajectory: Vec<EmotionSummary>,
    pub relationship: Option<RelationshipSummary>,
    pub budget_tokens: usize,
}

/// The composed prompt and what was left out.
#[derive(Debug, Clone)]
pub struct Composed {
    pub messages: Vec<ChatMessage>,
    pub components: Vec<&'static str>,
    pub degraded: Vec<String>,
}

pub async fn compose<F, Fut>(
    load: F,
    ctx: &ComposeContext,
    parallel: bool,
) -> Result<Composed, StoreError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Arc<Character>, StoreError>>,
{
    let identity = async {
        load()
            .await
            .map(|c| Some(components::character_identity(&c)))
    };
    let mode = async { load().await.map(|c| Some(components::character_mode(&c))) };
    let guidance = async {
        load()
            .await
            .map(|c| components::ai_identity_guidance(&c, &ctx.user_text))
    };
    let personality = async {
        load()
            .await
            .map(|c| Some(components::character_personality(&c)))
    };
    let voice = async { load().await.map(|c| Some(components::character_voice(&c))) };
    let final_guidance = async {
        load()
            .await
            .map(|c| Some(components::final_response_guidance(&c, &ctx.user_name)))
    };
    let built: [(bool, Result<Option<Component>, StoreError>); 6] = if parallel {
        let (a, b, c, d, e, f) =
            tokio::join!(identity, mode, guidance, personality, voice, final_guidance);
        [
            (true, a),
            (true, b),
            (false, c),
            (false, d),
            (false, e),
            (true, f),
        ]
    } else {
        [
            (true, identity.await),
            (true, mode.await),
            (false, guidance.await),
            (false, personality.await),
            (false, voice.await),
            (true, final_guidance.await),
        ]
    };
    let mut parts = Vec::with_capacity(9);
    let mut degraded = Vec::new();
    for (required, r) in built {
        match r {
            Ok(Some(c)) => parts.push(c),
            Ok(None) => {}
            Err(e) if required => return Err(e),
            Err(e) => degraded.push(format!("component: {e}")),
        }
    }
    parts.extend(components::memories(&ctx.memories));
    parts.extend(components::emotion_context(
        ctx.user_emotion.as_ref(),
        &ctx.trajectory,
    ));
    parts.extend(components::relationship(ctx.relationship.as_ref()));
    let names = parts.iter().map(|c| c.kind.as_str()).collect();
    let messages = components::assemble(
        parts,
        &ctx.history,
        &ctx.user_name,
        &ctx.user_text,
        ctx.budget_tokens,
    );
    Ok(Composed {
        messages,
        components: names,
        degraded,
    })
}
