//! Which character bots this gateway runs (one Discord bot token per character), read from
//! three places that may be combined:
//!
//! - `WHISPERFLEET_DISCORD_TOKEN` + `WHISPERFLEET_DISCORD_CHARACTER`: one bot, as the
//!   original platform ran;
//! - `WHISPERFLEET_DISCORD_BOTS`: `Name=token,Other=token2` (commas or new lines);
//! - `WHISPERFLEET_DISCORD_BOTS_FILE`: a file with one `Name=token` a line, `#` comments.
//!
//! No error message and no `Debug` output ever contains a token: a bad entry is named by its
//! position (and its character name when it has one), never by its text, because a malformed
//! line may well be a bare token.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use whisperfleet_shared::character::normalize_name;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::config::entries::{self, BadEntry};

/// One character bot: the character it plays and its Discord bot token.
#[derive(Clone)]
pub struct BotConfig {
    pub character: String,
    pub token: SecretString,
}

impl BotConfig {
    pub fn new(character: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            character: character.into(),
            token: SecretString::from(token.into()),
        }
    }
}

impl fmt::Debug for BotConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotConfig")
            .field("character", &self.character)
            .field("token", &"[REDACTED]")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BotConfigError {
    #[error(
        "WHISPERFLEET_DISCORD_TOKEN is set but WHISPERFLEET_DISCORD_CHARACTER is not: name the character this bot plays"
    )]
    TokenWithoutCharacter,
    #[error("WHISPERFLEET_DISCORD_CHARACTER is {0:?} but WHISPERFLEET_DISCORD_TOKEN is not set")]
    CharacterWithoutToken(String),
    /// An entry of a list or file, or one variable, by where it stands.
    #[error(transparent)]
    BadEntry(#[from] BadEntry),
    #[error("cannot read WHISPERFLEET_DISCORD_BOTS_FILE {path}: {reason}")]
    File { path: String, reason: String },
    #[error("character {0:?} has more than one Discord bot configured")]
    DuplicateCharacter(String),
    #[error(
        "characters {0:?} and {1:?} have the same token; each character needs its own Discord bot"
    )]
    DuplicateToken(String, String),
}

/// Every configured bot, in configuration order (single bot, list, file). Empty when no
/// token is configured: the gateway then runs without Discord.
pub fn bots_from_config(config: &Config) -> Result<Vec<BotConfig>, BotConfigError> {
    let file = match &config.discord.bots_file {
        Some(path) => Some((path.clone(), read_file(path)?)),
        None => None,
    };
    collect(
        config.discord.token.as_ref(),
        config.discord.character.as_deref(),
        config.discord.bots.as_ref(),
        file.as_ref().map(|(p, text)| (p.as_path(), text)),
    )
}

fn read_file(path: &Path) -> Result<SecretString, BotConfigError> {
    // The io error names what went wrong (not found, permission), never the content.
    std::fs::read_to_string(path)
        .map(SecretString::from)
        .map_err(|e| BotConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// The three sources combined and checked for duplicates.
fn collect(
    token: Option<&SecretString>,
    character: Option<&str>,
    list: Option<&SecretString>,
    file: Option<(&Path, &SecretString)>,
) -> Result<Vec<BotConfig>, BotConfigError> {
    let mut bots = Vec::new();
    let character = character.map(str::trim).filter(|c| !c.is_empty());
    let token = token.filter(|t| !t.expose_secret().trim().is_empty());
    if let Some(c) = character
        && looks_like_token(c)
    {
        // Never echo it: it is probably the token, in the wrong variable.
        return Err(BotConfigError::BadEntry(BadEntry {
            origin: "WHISPERFLEET_DISCORD_CHARACTER".into(),
            position: "the value".into(),
            problem: "looks like a bot token, not a character name (were \
                      WHISPERFLEET_DISCORD_TOKEN and WHISPERFLEET_DISCORD_CHARACTER swapped?)"
                .into(),
        }));
    }
    match (token, character) {
        (Some(token), Some(character)) => {
            let token = token.expose_secret().trim();
            check_token(token, character).map_err(|problem| BadEntry {
                origin: "WHISPERFLEET_DISCORD_TOKEN".into(),
                position: "the token".into(),
                problem,
            })?;
            bots.push(BotConfig::new(character, token));
        }
        (Some(_), None) => return Err(BotConfigError::TokenWithoutCharacter),
        (None, Some(character)) if list.is_none() && file.is_none() => {
            return Err(BotConfigError::CharacterWithoutToken(character.into()));
        }
        // A character name left over next to a bot list is harmless: the list names its own.
        (None, _) => {}
    }
    if let Some(list) = list {
        bots.extend(parse_bot_list(list.expose_secret())?);
    }
    if let Some((path, text)) = file {
        bots.extend(parse_bots_file(path, text.expose_secret())?);
    }
    check_unique(&bots)?;
    Ok(bots)
}

/// `Name=token,Other=token2` (commas or new lines separate entries; blank entries are
/// skipped so a trailing comma is fine).
pub fn parse_bot_list(text: &str) -> Result<Vec<BotConfig>, BotConfigError> {
    Ok(entries::parse_list(
        "WHISPERFLEET_DISCORD_BOTS",
        text,
        parse_entry,
    )?)
}

/// One `Name=token` a line; blank lines and lines starting with `#` are skipped.
pub fn parse_bots_file(path: &Path, text: &str) -> Result<Vec<BotConfig>, BotConfigError> {
    Ok(entries::parse_file(
        "WHISPERFLEET_DISCORD_BOTS_FILE",
        path,
        text,
        parse_entry,
    )?)
}

/// The problem is described without quoting the entry: it may be a token.
fn parse_entry(entry: &str) -> Result<BotConfig, String> {
    let Some((name, token)) = entry.split_once('=') else {
        return Err(
            "expected Name=token (the entry is not shown because it may contain a token)".into(),
        );
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("the character name before '=' is empty".into());
    }
    if looks_like_token(name) {
        return Err(
            "the character name before '=' looks like a bot token (expected Name=token; the \
             entry is not shown)"
                .into(),
        );
    }
    let token = token.trim();
    check_token(token, name)?;
    Ok(BotConfig::new(name, token))
}

/// A character name is words; a Discord bot token is one long run of base64 with two dots
/// (`<id>.<timestamp>.<hmac>`, ~70 chars). Names that look like one are refused unquoted, so
/// a swapped `Name=token` never reaches a log line.
fn looks_like_token(name: &str) -> bool {
    let name = name.trim();
    !name.contains(char::is_whitespace)
        && (name.len() >= 50 || (name.len() >= 30 && name.matches('.').count() >= 2))
}

fn check_token(token: &str, character: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err(format!("the token for {character:?} is empty"));
    }
    // Also catches `Name=token # comment`: only whole-line comments are supported.
    if token.chars().any(char::is_whitespace) {
        return Err(format!("the token for {character:?} contains whitespace"));
    }
    Ok(())
}

/// One bot per character (the conversation key is per character), one character per token
/// (the same bot connected twice would answer every message twice).
fn check_unique(bots: &[BotConfig]) -> Result<(), BotConfigError> {
    for (i, bot) in bots.iter().enumerate() {
        for earlier in &bots[..i] {
            if normalize_name(&earlier.character) == normalize_name(&bot.character) {
                return Err(BotConfigError::DuplicateCharacter(bot.character.clone()));
            }
            if earlier.token.expose_secret() == bot.token.expose_secret() {
                return Err(BotConfigError::DuplicateToken(
                    earlier.character.clone(),
                    bot.character.clone(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "MTIz.secret-one.AAAA";
    const T2: &str = "NDU2.secret-two.BBBB";

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    fn names(bots: &[BotConfig]) -> Vec<&str> {
        bots.iter().map(|b| b.character.as_str()).collect()
    }

    /// No token fragment may appear in anything a user or a log could see.
    fn assert_no_token(text: &str) {
        for t in [T1, T2, "secret-one", "secret-two", "bare-token-value"] {
            assert!(!text.contains(t), "token leaked in {text:?}");
        }
    }

    #[test]
    fn single_bot_from_token_and_character() {
        let bots = collect(Some(&secret(T1)), Some(" Vellum "), None, None).unwrap();
        assert_eq!(names(&bots), ["Vellum"]);
        assert_eq!(bots[0].token.expose_secret(), T1);
    }

    #[test]
    fn list_form_with_commas_newlines_and_trailing_comma() {
        let bots = parse_bot_list(&format!("Vellum={T1}, Dr Nora = {T2},\n")).unwrap();
        assert_eq!(names(&bots), ["Vellum", "Dr Nora"]);
        assert_eq!(bots[1].token.expose_secret(), T2);
    }

    #[test]
    fn file_form_with_comments_and_blank_lines() {
        let text = format!("# the fleet's bots\n\nVellum={T1}\r\n  # Nora is new\nNora={T2}\n");
        let bots = parse_bots_file(Path::new("/run/secrets/bots"), &text).unwrap();
        assert_eq!(names(&bots), ["Vellum", "Nora"]);
        assert_eq!(bots[0].token.expose_secret(), T1);
    }

    #[test]
    fn all_three_forms_combine() {
        let dir = std::env::temp_dir().join(format!("wf-bots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bots.txt");
        std::fs::write(&path, "Nora=NDU2.from-file\n").unwrap();
        let mut config = Config::default();
        config.discord.token = Some(secret(T1));
        config.discord.character = Some("Vellum".into());
        config.discord.bots = Some(secret(&format!("Elena={T2}")));
        config.discord.bots_file = Some(path.clone());
        let bots = bots_from_config(&config).unwrap();
        assert_eq!(names(&bots), ["Vellum", "Elena", "Nora"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nothing_configured_means_no_bots() {
        assert!(bots_from_config(&Config::default()).unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_named_by_position_never_by_content() {
        let cases = [
            (
                "Vellum=ok.token,bare-token-value",
                "entry 2",
                "expected Name=token",
            ),
            ("=bare-token-value", "entry 1", "character name"),
            ("Vellum=", "entry 1", "empty"),
            ("Vellum=bare-token-value # mine", "entry 1", "whitespace"),
        ];
        for (list, position, problem) in cases {
            let err = parse_bot_list(list).unwrap_err().to_string();
            assert!(err.contains("WHISPERFLEET_DISCORD_BOTS"), "{err}");
            assert!(err.contains(position), "{err}");
            assert!(err.contains(problem), "{err}");
            assert_no_token(&err);
        }
        let err = parse_bots_file(Path::new("bots.txt"), "# c\nVellum=a.b\nbare-token-value\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bots.txt, line 3"), "{err}");
        assert_no_token(&err);
    }

    #[test]
    fn missing_halves_and_duplicates_are_refused() {
        assert_eq!(
            collect(Some(&secret(T1)), None, None, None).unwrap_err(),
            BotConfigError::TokenWithoutCharacter
        );
        assert_eq!(
            collect(None, Some("Vellum"), None, None).unwrap_err(),
            BotConfigError::CharacterWithoutToken("Vellum".into())
        );
        let dup = collect(
            None,
            None,
            Some(&secret(&format!("Nora={T1},nora={T2}"))),
            None,
        )
        .unwrap_err();
        assert_eq!(dup, BotConfigError::DuplicateCharacter("nora".into()));
        let same_token = collect(
            Some(&secret(T1)),
            Some("Vellum"),
            Some(&secret(&format!("Nora={T1}"))),
            None,
        )
        .unwrap_err();
        assert_eq!(
            same_token,
            BotConfigError::DuplicateToken("Vellum".into(), "Nora".into())
        );
        assert_no_token(&same_token.to_string());
        assert_no_token(&format!("{same_token:?}"));
    }

    #[test]
    fn unreadable_file_is_named_without_content() {
        let mut config = Config::default();
        config.discord.bots_file = Some("/nonexistent/wf-bots".into());
        let err = bots_from_config(&config).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/wf-bots"), "{err}");
    }

    #[test]
    fn debug_redacts_the_token() {
        let bots = parse_bot_list(&format!("Vellum={T1},Nora={T2}")).unwrap();
        let shown = format!("{bots:?} {:#?}", bots[0]);
        assert!(
            shown.contains("Vellum") && shown.contains("REDACTED"),
            "{shown}"
        );
        assert_no_token(&shown);
    }

    #[test]
    fn a_token_in_the_name_place_is_refused_without_being_shown() {
        let token = "MTA0NTk4NzY1NDMyMTA5ODc2.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB";
        let e = parse_bot_list(&format!("{token}=Vellum")).unwrap_err();
        assert!(e.to_string().contains("looks like a bot token"), "{e}");
        assert!(!e.to_string().contains(token), "{e}");
        let e = collect(None, Some(token), None, None).unwrap_err();
        assert!(e.to_string().contains("swapped"), "{e}");
        assert!(!e.to_string().contains(token), "{e}");
        // Real names pass, however long.
        assert!(!looks_like_token(
            "Nora Halvorsen, Keeper of the Long Northern Lighthouse Archive"
        ));
        assert!(!looks_like_token("Old Wick"));
    }
}
