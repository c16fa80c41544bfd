//! Component 1, Character Identity: who the character is — name, occupation, description,
//! the most important background entries and values.

use std::cmp::Reverse;

use whisperfleet_shared::character::Character;

use super::model::{Component, ComponentKind};
use super::text::{display_name, humanize};

/// "a" or "an" for a noun phrase, by its first sound as far as spelling tells.
fn article(phrase: &str) -> &'static str {
    let p = phrase.trim().to_lowercase();
    let consonant_sound = ["uni", "use", "usu", "eu", "one", "once"];
    let vowel_sound = ["hour", "honest", "honor", "honour", "heir"];
    if vowel_sound.iter().any(|v| p.starts_with(v)) {
        return "an";
    }
    if consonant_sound.iter().any(|c| p.starts_with(c)) {
        return "a";
    }
    match p.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

fn importance_rank(importance: &str) -> u8 {
    match importance.trim().to_ascii_lowercase().as_str() {
        "critical" => 4,
        "high" => 3,
        "medium" | "moderate" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// Who the character is: name and occupation, description, the three most important
/// background entries and the three most important values.
pub fn character_identity(c: &Character) -> Component {
    let name = display_name(c);
    let occupation = c.occupation.trim();
    let mut parts = vec![if occupation.is_empty() {
        format!("You are {name}.")
    } else {
        format!("You are {name}, {} {occupation}.", article(occupation))
    }];
    if !c.description.trim().is_empty() {
        parts.push(c.description.trim().to_string());
    }
    // A card's personality and scenario belong to the character block too.
    parts.extend(super::card::character_block(c));

    let mut background: Vec<_> = c
        .background
        .iter()
        .filter(|b| !b.title.trim().is_empty() || !b.description.trim().is_empty())
        .collect();
    // Stable sort: equal importance keeps the author's order.
    background.sort_by_key(|b| Reverse(b.importance_level));
    if !background.is_empty() {
        parts.push("\nKey background:".into());
        for b in background.into_iter().take(3) {
            let mut line = format!("- {}", b.title.trim());
            if !b.period.trim().is_empty() {
                line.push_str(&format!(" ({})", b.period.trim()));
            }
            if !b.description.trim().is_empty() {
                if b.title.trim().is_empty() {
                    line = format!("- {}", b.description.trim());
                } else {
                    line.push_str(&format!(": {}", b.description.trim()));
                }
            }
            parts.push(line);
        }
    }

    let mut values: Vec<_> = c
        .values
        .iter()
        .filter(|v| !v.key.trim().is_empty() || !v.description.trim().is_empty())
        .collect();
    values.sort_by_key(|v| Reverse(importance_rank(&v.importance)));
    if !values.is_empty() {
        parts.push("\nCore values:".into());
        for v in values.into_iter().take(3) {
            let label = humanize(&v.key);
            let line = match (label.is_empty(), v.description.trim()) {
                (false, "") => format!("- {label}"),
                (true, d) => format!("- {d}"),
                (false, d) => format!("- {label}: {d}"),
            };
            parts.push(line);
        }
    }

    Component::new(
        ComponentKind::CharacterIdentity,
        format!(
            "{}\n{}",
            ComponentKind::CharacterIdentity.heading(),
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
    fn identity_takes_top_background_and_values() {
        let text = character_identity(&sample(Archetype::RealWorld, false)).text;
        assert!(
            text.contains("You are Tess Marlow, an oceanographer."),
            "{text}"
        );
        assert!(text.contains("bg5") && text.contains("bg4") && text.contains("bg3"));
        assert!(!text.contains("bg2") && !text.contains("bg1"));
        assert!(text.contains("Critical one: matters most"));
        let crit = text.find("Critical one").unwrap();
        let high = text.find("High one").unwrap();
        assert!(crit < high);
        assert!(
            !text.contains("Low one"),
            "only the top three values: {text}"
        );
        assert_eq!(article("university lecturer"), "a");
        assert_eq!(article("AI archivist"), "an");
        assert_eq!(article("marine biologist"), "a");
    }
}
