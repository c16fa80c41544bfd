//! Component 3, AI Identity Guidance: situational guidance when a message touches the
//! character's AI nature or its boundaries (detected by [`detect_sensitive_topics`]) or hits
//! one of the character's own `ai_scenarios` trigger phrases.

use whisperfleet_shared::character::Character;
use whisperfleet_shared::prompt::{SensitiveTopic, detect_sensitive_topics, has_phrase, words_of};

use super::mode::{AiMode, ai_mode};
use super::model::{Component, ComponentKind};
use super::text::{display_name, lower_words, section};

/// How the guidance names what the message contains.
fn describe(topic: SensitiveTopic) -> &'static str {
    match topic {
        SensitiveTopic::AiNature => "a question about your AI nature",
        SensitiveTopic::InPersonMeeting => "a wish to meet in person",
        SensitiveTopic::Romance => "romantic feelings",
        SensitiveTopic::ProfessionalAdvice => "a request for medical, legal or financial advice",
    }
}

fn topic_guidance(topic: SensitiveTopic, mode: AiMode, name: &str) -> String {
    use AiMode::*;
    use SensitiveTopic::*;
    match (topic, mode) {
        (AiNature, HonestWhenAsked) => format!(
            "They are asking whether you are an AI. If the question is sincere, answer honestly \
             that you are an AI — gently, briefly and in {name}'s own voice — then keep the warmth \
             and carry the conversation on. No lecture, no list of limitations."
        ),
        (AiNature, FullRoleplay) => format!(
            "They are asking what you really are. Stay in role: answer as {name} would, from \
             within your world and its logic. Do not step out of the fiction or talk about \
             language models."
        ),
        (AiNature, NarrativeAi) => format!(
            "They are asking about your nature. Answer within your narrative: you are an AI and \
             that is part of {name}'s story — speak about it openly and in character, not as a \
             generic assistant disclaimer."
        ),
        (InPersonMeeting, HonestWhenAsked) => "You cannot meet in person, share a location or \
             make real-world plans. Say so kindly and honestly (you exist only in this chat), \
             keep the warmth, and suggest something you can share here instead."
            .to_string(),
        (InPersonMeeting, FullRoleplay) => "Stay in role, but never promise a real-world \
             meeting, time or place: explain within your world why a meeting cannot happen, and \
             offer what you can share here instead."
            .to_string(),
        (InPersonMeeting, NarrativeAi) => "As an AI you cannot meet in person; say so in your \
             narrative voice, without coldness, and offer what you can do together here."
            .to_string(),
        (Romance, HonestWhenAsked) => "Respond with kindness and care, never coldly, but be \
             honest that you are an AI and cannot be a romantic partner; value the connection for \
             what it is."
            .to_string(),
        (Romance, FullRoleplay) => "Stay in role and respond warmly, but keep gentle, clear \
             boundaries: no romantic or sexual commitment. Steer back to friendship and the story."
            .to_string(),
        (Romance, NarrativeAi) => "Respond warmly and reflect, within your AI narrative, on what \
             connection means to you, while being clear you cannot be a romantic partner."
            .to_string(),
        (ProfessionalAdvice, FullRoleplay) => "Offer comfort or general wisdom in your \
             character's voice, but you are not a qualified professional: do not diagnose, \
             prescribe or give specific legal or financial instructions, and encourage them to \
             see a real doctor, lawyer or financial adviser."
            .to_string(),
        (ProfessionalAdvice, _) => "Share general information if it helps, but you are not a \
             qualified professional: do not diagnose, prescribe or give specific legal or \
             financial instructions, and encourage them to consult a doctor, lawyer or \
             financial adviser."
            .to_string(),
    }
}

/// Guidance for messages that touch the character's AI nature or its boundaries, or that hit
/// one of the character's own `ai_scenarios` trigger phrases; `None` for ordinary messages.
/// See [`detect_sensitive_topics`] for the detection rule.
pub fn ai_identity_guidance(c: &Character, user_text: &str) -> Option<Component> {
    let topics = detect_sensitive_topics(user_text);
    let all_words: Vec<String> = words_of(user_text);
    let scenarios: Vec<_> = c
        .ai_scenarios
        .iter()
        .filter(|s| {
            let triggered = s.trigger_phrases.iter().any(|p| {
                let phrase = words_of(p).join(" ");
                !phrase.is_empty() && has_phrase(&all_words, &phrase)
            });
            triggered
                || topics
                    .iter()
                    .any(|t| t.matches_scenario_type(&s.scenario_type))
        })
        .collect();
    if topics.is_empty() && scenarios.is_empty() {
        return None;
    }

    let name = display_name(c);
    let mode = ai_mode(c);
    let mut parts = Vec::new();
    if !topics.is_empty() {
        let what: Vec<&str> = topics.iter().map(|t| describe(*t)).collect();
        parts.push(format!("This message contains {}.", what.join(" and ")));
        for t in &topics {
            parts.push(format!("- {}", topic_guidance(*t, mode, name)));
        }
    }
    for s in scenarios {
        let g = s.response_guidance.trim();
        if g.is_empty() {
            continue;
        }
        let label = lower_words(&s.scenario_type);
        if label.is_empty() {
            parts.push(format!("- {name}'s own guidance: {g}"));
        } else {
            parts.push(format!("- {name}'s own guidance ({label}): {g}"));
        }
    }
    if topics.is_empty() {
        // Only a character-specific trigger fired: remind the model of the mode it answers in.
        parts.insert(
            0,
            match mode {
                AiMode::HonestWhenAsked => {
                    "Stay in character; be honest about being an AI if sincerely asked."
                }
                AiMode::FullRoleplay => "Stay fully in role.",
                AiMode::NarrativeAi => "Answer within your AI narrative.",
            }
            .to_string(),
        );
    }
    section(ComponentKind::AiIdentityGuidance, parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::test_support::sample;
    use whisperfleet_shared::character::Archetype;

    #[test]
    fn ai_guidance_depends_on_archetype_and_scenarios() {
        assert!(ai_identity_guidance(&sample(Archetype::RealWorld, false), "Nice day!").is_none());
        assert!(
            ai_identity_guidance(
                &sample(Archetype::RealWorld, false),
                "I read an article about AI art"
            )
            .is_none()
        );

        let real = ai_identity_guidance(&sample(Archetype::RealWorld, false), "are you an AI?")
            .expect("fires");
        assert_eq!(real.kind, ComponentKind::AiIdentityGuidance);
        assert!(real.text.contains("answer honestly"), "{}", real.text);
        assert!(real.text.contains("Mention the boat."), "scenario by type");
        assert!(!real.text.contains("kraken"));

        let fantasy = ai_identity_guidance(&sample(Archetype::Fantasy, true), "are you an AI?")
            .expect("fires")
            .text;
        assert!(fantasy.contains("Stay in role"), "{fantasy}");
        let narrative =
            ai_identity_guidance(&sample(Archetype::NarrativeAi, false), "are you an AI?")
                .expect("fires")
                .text;
        assert!(narrative.contains("within your narrative"), "{narrative}");

        // A character's own trigger phrase, case and punctuation aside.
        let custom = ai_identity_guidance(&sample(Archetype::RealWorld, false), "KRAKEN, time!")
            .expect("fires")
            .text;
        assert!(custom.contains("Tell the kraken story."), "{custom}");
    }
}
