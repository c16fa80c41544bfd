//! Context component: the user's current emotion and recent emotional trajectory, with a hint
//! on how to respond.

use super::model::{Component, ComponentKind, EmotionSummary};
use super::text::section;

fn emotion_adjective(label: &str) -> String {
    match label.trim().to_ascii_lowercase().as_str() {
        "anger" => "angry".into(),
        "anticipation" => "expectant".into(),
        "disgust" => "disgusted".into(),
        "fear" => "anxious or afraid".into(),
        "joy" => "joyful".into(),
        "love" => "affectionate".into(),
        "optimism" => "optimistic".into(),
        "pessimism" => "pessimistic".into(),
        "sadness" => "sad".into(),
        "surprise" => "surprised".into(),
        "trust" => "trusting".into(),
        "neutral" => "calm".into(),
        other => other.to_string(),
    }
}

fn is_neutral(e: &EmotionSummary) -> bool {
    let l = e.label.trim().to_ascii_lowercase();
    l.is_empty() || l == "neutral"
}

fn emotion_hint(label: &str) -> Option<&'static str> {
    Some(match label.trim().to_ascii_lowercase().as_str() {
        "sadness" | "pessimism" => "be gentle and supportive; acknowledge the feeling first",
        "fear" => "be reassuring and steady; acknowledge the worry first",
        "anger" => "stay calm and don't get defensive; acknowledge what upset them",
        "disgust" => "take their reaction seriously without amplifying it",
        "joy" | "optimism" | "love" | "trust" => "share in the good mood",
        "anticipation" | "surprise" => "match their energy and curiosity",
        _ => return None,
    })
}

/// The user's current emotion and recent trajectory (oldest first); `None` when there is
/// nothing beyond neutral to say.
pub fn emotion_context(
    user_emotion: Option<&EmotionSummary>,
    trajectory: &[EmotionSummary],
) -> Option<Component> {
    let current = user_emotion.filter(|e| !is_neutral(e));
    let labelled: Vec<&EmotionSummary> = trajectory
        .iter()
        .filter(|e| !e.label.trim().is_empty())
        .collect();
    let trajectory_says_something = labelled.iter().any(|e| !is_neutral(e));
    if current.is_none() && !trajectory_says_something {
        return None;
    }
    let mut parts = Vec::new();
    if let Some(e) = current {
        let strength = if e.intensity >= 0.7 {
            "strongly"
        } else if e.intensity >= 0.4 {
            "fairly"
        } else {
            "slightly"
        };
        parts.push(format!(
            "Right now they seem {strength} {} ({}, intensity {:.2}).",
            emotion_adjective(&e.label),
            e.label.trim().to_lowercase(),
            e.intensity
        ));
    }
    if labelled.len() >= 2 || (current.is_none() && !labelled.is_empty()) {
        let path: Vec<String> = labelled
            .iter()
            .map(|e| e.label.trim().to_lowercase())
            .collect();
        parts.push(format!(
            "Recent emotional trajectory (oldest → newest): {}.",
            path.join(" → ")
        ));
        if let (Some(first), Some(last)) = (path.first(), path.last())
            && first != last
        {
            parts.push(format!("Their mood has shifted from {first} to {last}."));
        }
    }
    let focus = current.or_else(|| labelled.last().copied());
    if let Some(hint) = focus.and_then(|e| emotion_hint(&e.label)) {
        parts.push(format!("Respond with emotional attunement: {hint}."));
    }
    section(ComponentKind::EmotionContext, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emotion_context_skips_neutral_and_reads_trajectory() {
        assert!(emotion_context(None, &[]).is_none());
        let neutral = EmotionSummary {
            label: "neutral".into(),
            intensity: 0.9,
        };
        assert!(emotion_context(Some(&neutral), std::slice::from_ref(&neutral)).is_none());
        let sad = EmotionSummary {
            label: "sadness".into(),
            intensity: 0.8,
        };
        let joy = EmotionSummary {
            label: "joy".into(),
            intensity: 0.5,
        };
        let e = emotion_context(Some(&sad), &[joy, sad.clone()])
            .unwrap()
            .text;
        assert!(
            e.contains("strongly sad") && e.contains("from joy to sadness"),
            "{e}"
        );
        assert!(e.contains("gentle"));
    }
}
