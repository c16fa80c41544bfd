//! Context component: where the user × character relationship stands, in words.

use super::model::{Component, ComponentKind, RelationshipSummary};
use super::text::section;

/// Where the relationship stands, in words; `None` without a relationship record.
pub fn relationship(r: Option<&RelationshipSummary>) -> Option<Component> {
    let r = r?;
    let closeness = (r.trust + r.affection) / 2.0;
    let stage = if r.interactions < 3 && closeness < 0.5 {
        "You have just met: be welcoming and curious, and don't presume familiarity."
    } else if closeness >= 0.75 && r.trust >= 0.7 {
        "They are a trusted friend: be warm, open and personal; callbacks to shared moments are welcome."
    } else if closeness >= 0.5 {
        "They are a friend: relaxed and friendly, with growing familiarity."
    } else if closeness >= 0.25 {
        "They are an acquaintance: friendly, still getting to know each other."
    } else {
        "Trust is still being built: be patient and kind, and not too familiar."
    };
    let mut parts = vec![stage.to_string()];
    if r.attunement >= 0.7 {
        parts.push("You understand how they like to talk; match it.".into());
    } else if r.attunement < 0.3 && r.interactions >= 3 {
        parts.push("You are still learning how they like to talk; follow their lead.".into());
    }
    parts.push(format!(
        "(trust {:.2}, affection {:.2}, attunement {:.2}, {} interactions)",
        r.trust, r.affection, r.attunement, r.interactions
    ));
    section(ComponentKind::Relationship, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationship_stage_in_words() {
        assert!(relationship(None).is_none());
        let new = relationship(Some(&RelationshipSummary {
            trust: 0.1,
            affection: 0.1,
            attunement: 0.1,
            interactions: 0,
        }))
        .unwrap()
        .text;
        assert!(new.contains("just met"), "{new}");
        let friend = relationship(Some(&RelationshipSummary {
            trust: 0.9,
            affection: 0.8,
            attunement: 0.8,
            interactions: 40,
        }))
        .unwrap()
        .text;
        assert!(friend.contains("trusted friend"), "{friend}");
    }
}
