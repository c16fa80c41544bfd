//! Component 5, Character Voice: voice traits, speech patterns grouped and ordered by
//! priority, and favourite topics.

use std::cmp::Reverse;

use whisperfleet_shared::character::Character;

use super::model::{Component, ComponentKind};
use super::text::humanize;

/// Groups of speech patterns, in the order the voice section lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PatternGroup {
    Signature,
    Preferred,
    Avoided,
    Other,
}

fn pattern_group(pattern_type: &str) -> PatternGroup {
    let t = pattern_type.to_ascii_lowercase();
    if t.contains("signature") || t.contains("catchphrase") {
        PatternGroup::Signature
    } else if t.contains("avoid") || t.contains("never") || t.contains("forbidden") {
        PatternGroup::Avoided
    } else if t.contains("prefer") || t.contains("favorite") || t.contains("favourite") {
        PatternGroup::Preferred
    } else {
        PatternGroup::Other
    }
}

/// How the character sounds: voice traits, speech patterns by priority, favourite topics.
pub fn character_voice(c: &Character) -> Component {
    let mut parts = Vec::new();

    let traits: Vec<String> = c
        .voice_traits
        .iter()
        .filter(|t| !t.trait_value.trim().is_empty())
        .map(|t| {
            let mut line = if t.trait_type.trim().is_empty() {
                format!("- {}", t.trait_value.trim())
            } else {
                format!("- {}: {}", humanize(&t.trait_type), t.trait_value.trim())
            };
            if !t.situational_context.trim().is_empty() {
                line.push_str(&format!(" ({})", t.situational_context.trim()));
            }
            line
        })
        .collect();
    if !traits.is_empty() {
        parts.push("Voice:".to_string());
        parts.extend(traits);
    }

    let mut patterns: Vec<_> = c
        .speech_patterns
        .iter()
        .filter(|p| !p.pattern_value.trim().is_empty())
        .collect();
    // Stable: by group, then highest priority first, then the author's order.
    patterns.sort_by_key(|p| (pattern_group(&p.pattern_type), Reverse(p.priority)));
    let mut current: Option<PatternGroup> = None;
    for p in patterns {
        let group = pattern_group(&p.pattern_type);
        if current != Some(group) {
            current = Some(group);
            let title = match group {
                PatternGroup::Signature => "Signature expressions:",
                PatternGroup::Preferred => "Preferred words and phrases:",
                PatternGroup::Avoided => "Words and phrases to avoid:",
                PatternGroup::Other => "Other speech habits:",
            };
            parts.push(format!("\n{title}"));
        }
        let mut line = match group {
            PatternGroup::Other if !p.pattern_type.trim().is_empty() => format!(
                "- {}: \"{}\"",
                humanize(&p.pattern_type),
                p.pattern_value.trim()
            ),
            _ => format!("- \"{}\"", p.pattern_value.trim()),
        };
        let details: Vec<&str> = [p.usage_frequency.trim(), p.context.trim()]
            .into_iter()
            .filter(|d| !d.is_empty())
            .collect();
        if !details.is_empty() && group != PatternGroup::Avoided {
            line.push_str(&format!(" ({})", details.join("; ")));
        }
        parts.push(line);
    }

    let mut interests: Vec<_> = c
        .interests
        .iter()
        .filter(|i| !i.interest_text.trim().is_empty())
        .collect();
    interests.sort_by_key(|i| Reverse(i.proficiency_level));
    let topics: Vec<&str> = interests
        .iter()
        .take(5)
        .map(|i| i.interest_text.trim())
        .collect();
    if !topics.is_empty() {
        parts.push(format!(
            "\nThings you love to talk about: {}.",
            topics.join("; ")
        ));
    }

    if parts.is_empty() {
        parts.push("Speak naturally, in a voice that fits your identity.".into());
    }
    Component::new(
        ComponentKind::CharacterVoice,
        format!(
            "{}\n{}",
            ComponentKind::CharacterVoice.heading(),
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
    fn voice_sorts_patterns_and_interests() {
        let text = character_voice(&sample(Archetype::RealWorld, false)).text;
        let high = text.find("High sig").unwrap();
        let low = text.find("Low sig").unwrap();
        let preferred = text.find("brine").unwrap();
        let avoided = text.find("synergy").unwrap();
        assert!(
            high < low && low < preferred && preferred < avoided,
            "{text}"
        );
        assert!(text.contains("\"High sig\" (often)"));
        assert!(text.contains("Things you love to talk about: ocean currents; knitting."));
    }
}
