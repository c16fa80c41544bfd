//! Small text helpers shared by several component builders: word casing, clipping, the
//! character's display name and the `# Heading` section writer.

use whisperfleet_shared::character::Character;

use super::model::{Component, ComponentKind};

/// `ocean_conservation` → `Ocean conservation`.
pub(super) fn humanize(s: &str) -> String {
    let spaced = s.trim().replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `ocean_conservation` → `ocean conservation` (for use mid-sentence).
pub(super) fn lower_words(s: &str) -> String {
    s.trim().replace(['_', '-'], " ").to_lowercase()
}

/// Cuts `text` to at most `max` characters (on a char boundary), marking the cut.
pub(super) fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

/// Writes a `# Heading` followed by the non-empty parts, or `None` if there are none.
pub(super) fn section(kind: ComponentKind, parts: Vec<String>) -> Option<Component> {
    let parts: Vec<String> = parts.into_iter().filter(|p| !p.trim().is_empty()).collect();
    if parts.is_empty() {
        return None;
    }
    Some(Component::new(
        kind,
        format!("{}\n{}", kind.heading(), parts.join("\n")),
    ))
}

pub(super) fn display_name(c: &Character) -> &str {
    let n = c.name.trim();
    if n.is_empty() { "the character" } else { n }
}
