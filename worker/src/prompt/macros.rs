//! Card macros: `{{char}}`, `{{user}}`, `<BOT>`, `<USER>` (and V3's `<char>`), in any letter
//! case, replaced at prompt time with the character's name (its nickname when the card has
//! one) and the user's display name. The user's name arrives already through
//! [`hygiene`](whisperfleet_shared::prompt::hygiene), so a macro cannot smuggle structure in.

/// What each macro stands for.
const CHAR_MACROS: [&str; 3] = ["{{char}}", "<bot>", "<char>"];
const USER_MACROS: [&str; 2] = ["{{user}}", "<user>"];

/// `text` with every macro replaced (ASCII case-insensitively).
pub fn resolve(text: &str, char_name: &str, user_name: &str) -> String {
    if !text.contains(['{', '<']) {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut plain_from = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let hit = CHAR_MACROS
            .iter()
            .map(|m| (m, char_name))
            .chain(USER_MACROS.iter().map(|m| (m, user_name)))
            .find(|(m, _)| {
                rest.len() >= m.len() && rest[..m.len()].eq_ignore_ascii_case(m.as_bytes())
            });
        match hit {
            // Macros are ASCII, so `i` and `i + len` are char boundaries.
            Some((m, with)) => {
                out.push_str(&text[plain_from..i]);
                out.push_str(with);
                i += m.len();
                plain_from = i;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[plain_from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_macro_in_any_case() {
        assert_eq!(
            resolve(
                "{{char}} meets {{User}}; <BOT> and <user>, <Char>, {{CHAR}}.",
                "Lyra",
                "Sam"
            ),
            "Lyra meets Sam; Lyra and Sam, Lyra, Lyra."
        );
        assert_eq!(
            resolve("no macros {here} <b>", "L", "S"),
            "no macros {here} <b>"
        );
        assert_eq!(resolve("café {{user}} ☃", "L", "Zoë"), "café Zoë ☃");
        assert_eq!(resolve("{{user", "L", "S"), "{{user");
    }
}
