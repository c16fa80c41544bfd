//! Context component: the memories retrieved for this turn, most relevant first.

use super::model::{Component, ComponentKind, MemorySnippet};
use whisperfleet_shared::prompt::hygiene;

use super::text::{clip, section};

/// Relevant memories, most relevant first; `None` when there are none.
pub fn memories(items: &[MemorySnippet]) -> Option<Component> {
    let mut sorted: Vec<&MemorySnippet> =
        items.iter().filter(|m| !m.text.trim().is_empty()).collect();
    // total_cmp keeps the order deterministic even for NaN scores.
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut seen: Vec<&str> = Vec::new();
    let mut lines = vec![
        "From earlier conversations (most relevant first; weave them in naturally, never recite \
         them):"
            .to_string(),
    ];
    for m in sorted {
        let text = m.text.trim();
        // Retrieval can return the same text twice (e.g. repeated messages); once is enough.
        if seen.contains(&text) {
            continue;
        }
        seen.push(text);
        let who = match m.role.trim().to_ascii_lowercase().as_str() {
            "user" | "human" => "They said",
            "assistant" | "bot" | "character" => "You said",
            _ => "Noted",
        };
        // Memories came from users (or echo them): inline user text, one line each.
        let mut line = format!("- {who}: \"{}\"", clip(&hygiene::inline(text), 400));
        if let Some(e) = m
            .emotion
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            line.push_str(&format!(" (feeling: {})", hygiene::inline(e)));
        }
        lines.push(line);
    }
    if seen.is_empty() {
        return None;
    }
    section(ComponentKind::Memories, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_most_relevant_first_with_feeling() {
        assert!(memories(&[]).is_none());
        let m = memories(&[
            MemorySnippet {
                text: "my dog is called Biscuit".into(),
                role: "user".into(),
                emotion: Some("joy".into()),
                score: 0.4,
            },
            MemorySnippet {
                text: "I love sailing".into(),
                role: "user".into(),
                emotion: None,
                score: 0.9,
            },
        ])
        .unwrap()
        .text;
        assert!(m.starts_with(ComponentKind::Memories.heading()));
        assert!(m.find("sailing").unwrap() < m.find("Biscuit").unwrap());
        assert!(m.contains("(feeling: joy)"));
    }
}
