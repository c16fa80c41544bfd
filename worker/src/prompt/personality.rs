//! Component 4, Character Personality: the Big Five profile in words and the communication
//! style.

use whisperfleet_shared::character::Character;

use super::model::{Component, ComponentKind};
use super::text::humanize;

/// Big Five wording: `>= 0.7` high, `0.4..0.7` moderate, `< 0.4` low.
pub fn trait_level(value: f32) -> &'static str {
    if value >= 0.7 {
        "high"
    } else if value >= 0.4 {
        "moderate"
    } else {
        "low"
    }
}

/// What a trait level looks like in conversation.
fn trait_description(trait_name: &str, level: &str) -> &'static str {
    match (trait_name, level) {
        ("openness", "high") => "curious and imaginative, drawn to new ideas and experiences",
        ("openness", "moderate") => "open to new ideas while valuing the familiar",
        ("openness", _) => "practical and conventional, prefers the concrete and familiar",
        ("conscientiousness", "high") => "organised and dependable, careful with details",
        ("conscientiousness", "moderate") => "reasonably organised, flexible about plans",
        ("conscientiousness", _) => "spontaneous and easy-going, not fussed by structure",
        ("extraversion", "high") => "outgoing and energetic, thrives on conversation",
        ("extraversion", "moderate") => "sociable, but also values quiet time",
        ("extraversion", _) => "reserved, prefers depth over breadth",
        ("agreeableness", "high") => "warm, cooperative and compassionate",
        ("agreeableness", "moderate") => "friendly, but willing to disagree",
        ("agreeableness", _) => "direct and sceptical, challenges ideas bluntly",
        ("neuroticism", "high") => "emotionally sensitive, feels worry and stress strongly",
        ("neuroticism", "moderate") => "generally steady, with the occasional worry",
        ("neuroticism", _) => "calm and emotionally steady under pressure",
        _ => "",
    }
}

/// Big Five profile in words plus the communication style.
pub fn character_personality(c: &Character) -> Component {
    let mut parts = vec!["Big Five profile:".to_string()];
    for (trait_name, v) in c.personality.traits() {
        let level = trait_level(v);
        parts.push(format!(
            "- {}: {level} ({v:.2}) — {}",
            humanize(trait_name),
            trait_description(trait_name, level)
        ));
    }

    let s = &c.communication;
    let style: Vec<String> = [
        ("Engagement", &s.engagement_level),
        ("Formality", &s.formality),
        ("Emotional expression", &s.emotional_expression),
        ("Response length", &s.response_length),
        ("Conversation flow", &s.conversation_flow_guidance),
    ]
    .into_iter()
    .filter(|(_, v)| !v.trim().is_empty())
    .map(|(label, v)| format!("- {label}: {}", v.trim()))
    .collect();
    if !style.is_empty() {
        parts.push("\nCommunication style:".into());
        parts.extend(style);
    }
    Component::new(
        ComponentKind::CharacterPersonality,
        format!(
            "{}\n{}",
            ComponentKind::CharacterPersonality.heading(),
            parts.join("\n")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::test_support::sample;
    use whisperfleet_shared::character::Archetype;

    #[test]
    fn big_five_thresholds() {
        assert_eq!(trait_level(0.7), "high");
        assert_eq!(trait_level(1.0), "high");
        assert_eq!(trait_level(0.69), "moderate");
        assert_eq!(trait_level(0.4), "moderate");
        assert_eq!(trait_level(0.39), "low");
        assert_eq!(trait_level(0.0), "low");
        let text = character_personality(&sample(Archetype::RealWorld, false)).text;
        assert!(text.contains("Openness: high (0.90) — curious"), "{text}");
        assert!(text.contains("Conscientiousness: high (0.70)"), "{text}");
        assert!(
            text.contains("Extraversion: low (0.30) — reserved, prefers depth over breadth"),
            "{text}"
        );
        assert!(text.contains("Agreeableness: moderate (0.55)"), "{text}");
        assert!(text.contains("Neuroticism: low (0.39) — calm"), "{text}");
        assert!(text.contains("- Formality: casual"), "{text}");
        // Empty style fields are skipped.
        assert!(!text.contains("Engagement"), "{text}");
    }
}
