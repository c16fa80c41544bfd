//! The HTTP API's keys, from `WHISPERFLEET_HTTP_API_KEYS` (`name=key,…`) and/or
//! `WHISPERFLEET_HTTP_API_KEYS_FILE` (one `name=key` a line, `#` comments). A key's name is
//! who calls (it shows in logs and errors, and it is the namespace of the identities the key
//! creates); the key itself is a secret and is never shown: a bad entry is named by its
//! variable or file and its position, never quoted, because a malformed line may well be a
//! bare key.

use std::fmt;
use std::path::Path;

use super::entries::{self, BadEntry};
use secrecy::{ExposeSecret, SecretString};

/// Shortest key accepted: anything shorter could be guessed through the API.
pub const MIN_KEY_LEN: usize = 16;
/// Longest name accepted (it is a namespace and a log field).
pub const MAX_NAME_LEN: usize = 64;

/// One API key and the name of who holds it.
#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    pub key: SecretString,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeysError {
    /// An entry of a list or file, or one variable, by where it stands.
    #[error(transparent)]
    BadEntry(#[from] BadEntry),
    #[error("cannot read WHISPERFLEET_HTTP_API_KEYS_FILE {path}: {reason}")]
    File { path: String, reason: String },
    #[error("the HTTP API key name {0:?} is configured more than once; names must be unique")]
    DuplicateName(String),
    #[error("the HTTP API keys named {0:?} and {1:?} are the same key; each name needs its own")]
    DuplicateKey(String, String),
}

/// Every configured key: the list first, then the file (read now), checked for duplicates
/// across both. Empty when neither is set.
pub fn collect(
    list: Option<&SecretString>,
    file: Option<&Path>,
) -> Result<Vec<ApiKey>, ApiKeysError> {
    let mut keys = match list {
        Some(list) => parse_list(list.expose_secret())?,
        None => Vec::new(),
    };
    if let Some(path) = file {
        // The io error names what went wrong (not found, permission), never the content.
        let text = std::fs::read_to_string(path)
            .map(SecretString::from)
            .map_err(|e| ApiKeysError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        keys.extend(parse_file(path, text.expose_secret())?);
    }
    check_unique(&keys)?;
    Ok(keys)
}

/// `name=key,other=key2` (commas or new lines; blank entries skipped, so a trailing comma
/// `name=key,other=key2` (commas or new lines; blank entries skipped, so a trailing comma
/// is fine).
pub fn parse_list(text: &str) -> Result<Vec<ApiKey>, ApiKeysError> {
    let keys = entries::parse_list("WHISPERFLEET_HTTP_API_KEYS", text, parse_entry)?;
    check_unique(&keys)?;
    Ok(keys)
}

/// One `name=key` a line; blank lines and lines starting with `#` are skipped.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<ApiKey>, ApiKeysError> {
    Ok(entries::parse_file(
        "WHISPERFLEET_HTTP_API_KEYS_FILE",
        path,
        text,
        parse_entry,
    )?)
}

/// The problem is described without quoting the entry: it may be a key.
fn parse_entry(entry: &str) -> Result<ApiKey, String> {
    let Some((name, key)) = entry.split_once('=') else {
        return Err(
            "expected name=key (the entry is not shown because it may contain a key)".into(),
        );
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("the name before '=' is empty".into());
    }
    // The name goes into logs and namespaces: keep it a plain word, and never echo one
    // that is not (it may be a key pasted in the wrong place).
    if name.len() > MAX_NAME_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "the name before '=' must be at most {MAX_NAME_LEN} ASCII letters, digits, '-', '_' \
             or '.' (not shown)"
        ));
    }
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("the key of {name:?} is empty"));
    }
    // Also catches `name=key # comment`: only whole-line comments are supported.
    if key.chars().any(char::is_whitespace) {
        return Err(format!("the key of {name:?} contains whitespace"));
    }
    if key.chars().count() < MIN_KEY_LEN {
        return Err(format!(
            "the key of {name:?} is shorter than {MIN_KEY_LEN} characters (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(ApiKey {
        name: name.to_string(),
        key: SecretString::from(key.to_string()),
    })
}

fn check_unique(keys: &[ApiKey]) -> Result<(), ApiKeysError> {
    for (i, k) in keys.iter().enumerate() {
        for earlier in &keys[..i] {
            if earlier.name == k.name {
                return Err(ApiKeysError::DuplicateName(k.name.clone()));
            }
            if earlier.key.expose_secret() == k.key.expose_secret() {
                return Err(ApiKeysError::DuplicateKey(
                    earlier.name.clone(),
                    k.name.clone(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1-0123456789abcdef";
    const K2: &str = "k2-fedcba9876543210";

    fn names(keys: &[ApiKey]) -> Vec<&str> {
        keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// No key fragment may appear in anything a user or a log could see.
    fn assert_no_key(text: &str) {
        for k in [K1, K2, "0123456789", "fedcba", "bare-key-value"] {
            assert!(!text.contains(k), "key leaked in {text:?}");
        }
    }

    #[test]
    fn list_with_commas_newlines_and_a_trailing_comma() {
        let keys = parse_list(&format!("acme={K1}, beta.app = {K2},\n")).unwrap();
        assert_eq!(names(&keys), ["acme", "beta.app"]);
        assert_eq!(keys[1].key.expose_secret(), K2);
    }

    #[test]
    fn file_with_comments_blank_lines_and_crlf() {
        let text = format!("# clients\n\nacme={K1}\r\n  # beta is new\nbeta={K2}\n");
        let keys = parse_file(Path::new("/run/secrets/keys"), &text).unwrap();
        assert_eq!(names(&keys), ["acme", "beta"]);
        assert_eq!(keys[0].key.expose_secret(), K1);
    }

    #[test]
    fn a_malformed_file_line_is_named_by_file_and_line_never_quoted() {
        let text = format!("acme={K1}\n\nbare-key-value\n");
        let err = parse_file(Path::new("/etc/wf/keys"), &text).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("/etc/wf/keys") && shown.contains("line 3"),
            "{shown}"
        );
        assert!(shown.contains("WHISPERFLEET_HTTP_API_KEYS_FILE"), "{shown}");
        assert_no_key(&shown);
        assert_no_key(&format!("{err:?}"));
    }

    #[test]
    fn bad_entries_are_refused_without_showing_the_key() {
        for (list, expect) in [
            (format!("acme={K1},={K2}"), "entry 2"),
            ("acme=".to_string(), "empty"),
            (format!("acme={K1} # note"), "whitespace"),
            ("acme=short".to_string(), "shorter than 16"),
            (format!("{}={K1}", "n".repeat(65)), "must be at most"),
            (format!("a name={K1}"), "must be at most"),
        ] {
            let err = parse_list(&list).unwrap_err().to_string();
            assert!(err.contains(expect), "{list:?}: {err}");
            assert!(err.contains("WHISPERFLEET_HTTP_API_KEYS"), "{err}");
            assert_no_key(&err);
        }
    }

    #[test]
    fn duplicate_names_and_keys_are_refused_across_list_and_file() {
        let err = parse_list(&format!("acme={K1},acme={K2}")).unwrap_err();
        assert_eq!(err, ApiKeysError::DuplicateName("acme".into()));
        let err = parse_list(&format!("acme={K1},beta={K1}")).unwrap_err();
        assert_eq!(
            err,
            ApiKeysError::DuplicateKey("acme".into(), "beta".into())
        );
        assert_no_key(&err.to_string());

        let dir = std::env::temp_dir().join(format!("wf-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(&path, format!("acme={K2}\n")).unwrap();
        let list = SecretString::from(format!("acme={K1}"));
        let err = collect(Some(&list), Some(&path)).unwrap_err();
        assert_eq!(err, ApiKeysError::DuplicateName("acme".into()));
        std::fs::write(&path, format!("beta={K2}\n")).unwrap();
        let keys = collect(Some(&list), Some(&path)).unwrap();
        assert_eq!(names(&keys), ["acme", "beta"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let err = collect(None, Some(Path::new("/nonexistent/wf-keys"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/wf-keys"), "{err}");
    }

    #[test]
    fn debug_redacts_the_key() {
        let keys = parse_list(&format!("acme={K1}")).unwrap();
        let shown = format!("{keys:?}");
        assert!(
            shown.contains("acme") && shown.contains("REDACTED"),
            "{shown}"
        );
        assert_no_key(&shown);
    }
}
