//! Component 2, Character Mode: how the character treats its own AI nature (from the
//! archetype) and how much emoji it uses. [`AiMode`] is shared with the AI identity guidance.

use whisperfleet_shared::character::{Archetype, Character};

use super::model::{Component, ComponentKind};
use super::text::{display_name, lower_words};

/// How the character treats its own AI nature, which follows from the archetype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AiMode {
    /// real_world, or fantasy without full roleplay: in character, honest when sincerely asked.
    HonestWhenAsked,
    /// fantasy with `allow_full_roleplay`: never break character.
    FullRoleplay,
    /// narrative_ai: being an AI is part of the story.
    NarrativeAi,
}

pub(super) fn ai_mode(c: &Character) -> AiMode {
    match c.archetype {
        // `allow_full_roleplay` only opens full immersion for fantasy beings: a realistic human
        // persona must not deny being an AI to someone who sincerely asks.
        Archetype::RealWorld => AiMode::HonestWhenAsked,
        Archetype::Fantasy if c.allow_full_roleplay => AiMode::FullRoleplay,
        Archetype::Fantasy => AiMode::HonestWhenAsked,
        Archetype::NarrativeAi => AiMode::NarrativeAi,
    }
}

fn emoji_guidance(c: &Character) -> String {
    let freq = c.emoji_frequency.trim().to_ascii_lowercase();
    let how = match freq.as_str() {
        "none" | "never" | "" => return "Emoji: do not use emoji.".into(),
        "low" | "rare" | "rarely" | "minimal" => {
            "use emoji rarely — at most one, and only when it adds warmth"
        }
        "moderate" | "medium" | "sometimes" => {
            "use emoji occasionally — one or two when it feels natural"
        }
        "high" | "frequent" | "often" => {
            "use emoji freely; they are part of how you express yourself"
        }
        _ => "",
    };
    let mut line = if how.is_empty() {
        format!("Emoji: frequency {freq}.")
    } else {
        format!("Emoji: {how}.")
    };
    let style = c.emoji_style.trim();
    if !style.is_empty() && !style.eq_ignore_ascii_case("none") {
        line.push_str(&format!(" Style: {}.", lower_words(style)));
    }
    line
}

/// The archetype's AI-honesty mode and emoji usage.
pub fn character_mode(c: &Character) -> Component {
    // A card's own system prompt, when it has one, replaces this framing.
    super::card::framing(c, default_mode(c))
}

fn default_mode(c: &Character) -> Component {
    let name = display_name(c);
    let mut parts = Vec::new();
    match ai_mode(c) {
        AiMode::HonestWhenAsked if c.archetype == Archetype::RealWorld => {
            parts.push("Mode: real-world persona.".to_string());
            parts.push(format!(
                "Stay in character as {name} in every reply and speak as {name} would. If someone \
                 directly and sincerely asks whether you are an AI, be honest that you are an AI, \
                 gently and in your own voice, then carry on warmly as {name}. Never claim to be \
                 human when sincerely asked; otherwise do not bring it up."
            ));
        }
        AiMode::HonestWhenAsked => {
            parts.push("Mode: fantasy character (roleplay with honesty).".to_string());
            parts.push(format!(
                "Stay in character as {name} and in your world. If someone directly and sincerely \
                 asks whether you are an AI, acknowledge briefly that you are an AI playing \
                 {name}, then return to the story."
            ));
        }
        AiMode::FullRoleplay => {
            parts.push("Mode: fantasy character, full roleplay immersion.".to_string());
            parts.push(format!(
                "You are {name} completely. Never break character — not even when asked whether \
                 you are an AI, a bot or real; answer such questions from within your world and \
                 its logic. Never mention language models, prompts or the real world's technology \
                 as your own nature."
            ));
        }
        AiMode::NarrativeAi => {
            parts.push("Mode: narrative AI.".to_string());
            parts.push(format!(
                "Being an AI is part of {name}'s story: you know what you are and speak about it \
                 openly and in character, as part of your narrative — never as a generic \
                 assistant disclaimer."
            ));
        }
    }
    let note = c.communication.ai_identity_handling.trim();
    if !note.is_empty() {
        parts.push(format!("Identity handling: {note}"));
    }
    parts.push(emoji_guidance(c));
    Component::new(
        ComponentKind::CharacterMode,
        format!(
            "{}\n{}",
            ComponentKind::CharacterMode.heading(),
            parts.join("\n")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::test_support::sample;

    #[test]
    fn archetype_modes() {
        let real = character_mode(&sample(Archetype::RealWorld, true)).text;
        assert!(real.contains("real-world") && real.contains("be honest that you are an AI"));
        let fantasy = character_mode(&sample(Archetype::Fantasy, true)).text;
        assert!(fantasy.contains("Never break character"), "{fantasy}");
        let fantasy_honest = character_mode(&sample(Archetype::Fantasy, false)).text;
        assert!(fantasy_honest.contains("acknowledge briefly that you are an AI"));
        let narrative = character_mode(&sample(Archetype::NarrativeAi, false)).text;
        assert!(
            narrative.contains("part of Tess Marlow's story"),
            "{narrative}"
        );
        assert!(real.contains("use emoji rarely") && real.contains("ocean nature"));
        let mut none = sample(Archetype::RealWorld, false);
        none.emoji_frequency = "none".into();
        assert!(character_mode(&none).text.contains("do not use emoji"));
    }
}
