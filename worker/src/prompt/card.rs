//! What a community card adds to the prompt (issue 16): its text with macros resolved, the
//! card's `system_prompt` as the framing (`{{original}}` inserting the default one), example
//! dialogue from `mes_example`, `post_history_instructions` after the history, and the
//! greeting a new conversation starts with. `creator_notes` are for people: nothing here
//! reads them.

use std::borrow::Cow;

use whisperfleet_shared::cards::{Card, CardData};
use whisperfleet_shared::character::Character;
use whisperfleet_shared::prompt::hygiene;

use super::assemble::sanitize_user_name;
use super::macros::resolve;
use super::model::{Component, ComponentKind};

/// Card text ready for a prompt: the macros resolved, then [`hygiene::message`], so neither
/// a card nor a user name a macro put at the start of a line can forge a heading, the
/// "talking with" line or a role.
pub fn resolve_text(c: &Character, user_name: &str, text: &str) -> String {
    let char_name = c
        .card
        .as_ref()
        .map_or(c.name.as_str(), |card| card.char_name());
    let user = sanitize_user_name(user_name);
    // A platform that gives no display name: what card tools call the user.
    let user = if user.is_empty() { "User".into() } else { user };
    hygiene::message(&resolve(text, char_name, &user))
}

/// The character with its card ready for a prompt: the fields a prompt reads (description,
/// personality, scenario, greetings, example dialogue, system prompt, post-history
/// instructions) through [`resolve_text`]; what no prompt reads is left out of the copy —
/// the original JSON, the lorebooks (their hits are resolved where they are placed:
/// [`lorebook`](fn@super::lorebook)), extensions, assets and the creator notes, which
/// therefore cannot reach a prompt. Borrowed unchanged for a character without a card.
pub fn for_prompt<'a>(c: &'a Character, user_name: &str) -> Cow<'a, Character> {
    let Some(card) = &c.card else {
        return Cow::Borrowed(c);
    };
    let fix = |s: &str| resolve_text(c, user_name, s);
    let d = &card.data;
    let data = CardData {
        name: d.name.clone(),
        nickname: d.nickname.clone(),
        description: fix(&d.description),
        personality: fix(&d.personality),
        scenario: fix(&d.scenario),
        first_mes: fix(&d.first_mes),
        mes_example: fix(&d.mes_example),
        system_prompt: fix(&d.system_prompt),
        post_history_instructions: fix(&d.post_history_instructions),
        alternate_greetings: d.alternate_greetings.iter().map(|g| fix(g)).collect(),
        ..CardData::default()
    };
    let mut out = c.clone_without_card();
    out.description = fix(&c.description);
    out.card = Some(Card {
        container: card.container,
        spec: card.spec,
        spec_version: card.spec_version.clone(),
        raw: String::new(),
        data,
        warnings: Vec::new(),
    });
    Cow::Owned(out)
}

/// The card's personality and scenario, for the character block.
pub(super) fn character_block(c: &Character) -> Vec<String> {
    let Some(card) = &c.card else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    if !card.data.personality.trim().is_empty() {
        lines.push(format!("Personality: {}", card.data.personality.trim()));
    }
    if !card.data.scenario.trim().is_empty() {
        lines.push(format!("Scenario: {}", card.data.scenario.trim()));
    }
    lines
}

/// The card's `system_prompt`, when not empty, replaces the default framing (the Character
/// Mode section's text); `{{original}}` in it stands for that default.
pub(super) fn framing(c: &Character, default: Component) -> Component {
    let Some(card) = &c.card else { return default };
    let custom = card.data.system_prompt.trim();
    if custom.is_empty() {
        return default;
    }
    let heading = ComponentKind::CharacterMode.heading();
    let original = default
        .text
        .strip_prefix(heading)
        .unwrap_or(&default.text)
        .trim();
    let text = replace_original(custom, original);
    Component::new(
        ComponentKind::CharacterMode,
        format!("{heading}\n{}", text.trim()),
    )
}

/// `{{original}}` (any case) replaced by `original`.
fn replace_original(text: &str, original: &str) -> String {
    const MACRO: &str = "{{original}}";
    let mut out = String::with_capacity(text.len() + original.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find(MACRO) {
        out.push_str(&rest[..at]);
        out.push_str(original);
        rest = &rest[at + MACRO.len()..];
    }
    out.push_str(rest);
    out
}

/// `mes_example` as example dialogue: each `<START>` block set apart.
pub fn example_dialogue(c: &Character) -> Option<Component> {
    let card = c.card.as_ref()?;
    let raw = card.data.mes_example.trim();
    if raw.is_empty() {
        return None;
    }
    let blocks: Vec<String> = raw
        .split("<START>")
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect();
    if blocks.is_empty() {
        return None;
    }
    Some(Component::new(
        ComponentKind::ExampleDialogue,
        format!(
            "{}\nHow {} speaks (examples, not part of this conversation):\n\n{}",
            ComponentKind::ExampleDialogue.heading(),
            card.char_name(),
            blocks.join("\n\n---\n\n")
        ),
    ))
}

/// The card's post-history instructions (`{{original}}`: there is no default), if any.
pub fn post_history(c: &Character) -> Option<String> {
    let card = c.card.as_ref()?;
    let text = replace_original(card.data.post_history_instructions.trim(), "");
    (!text.trim().is_empty()).then(|| text.trim().to_string())
}

/// The greeting a new conversation starts with: `first_mes` or one of `alternate_greetings`,
/// chosen by the conversation's key, so a conversation always gets the same one.
pub fn greeting(c: &Character, conversation_key: &str) -> Option<String> {
    let card = c.card.as_ref()?;
    let options: Vec<&str> = std::iter::once(card.data.first_mes.as_str())
        .chain(card.data.alternate_greetings.iter().map(String::as_str))
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    if options.is_empty() {
        return None;
    }
    // FNV-1a: stable across processes and releases (std's hasher is neither).
    let hash = conversation_key
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    Some(options[(hash % options.len() as u64) as usize].to_string())
}

#[cfg(test)]
mod tests;
