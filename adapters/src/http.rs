//! Small HTTP helpers every client of an outside service shares (LLM, embeddings,
//! InfluxDB): OpenAI-style endpoint URLs, `Retry-After`, showing URLs and errors without
//! credentials.

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// `base_url` → `<root>/v1/<path>` (e.g. `chat/completions`), accepting the forms people
/// paste: with or without a trailing slash, `/v1` or the full path. Errors name the URL
/// without credentials.
pub fn openai_endpoint(base_url: &str, path: &str) -> Result<String, String> {
    let mut root = base_url.trim().trim_end_matches('/');
    root = root.strip_suffix(&format!("/{path}")).unwrap_or(root);
    root = root.trim_end_matches('/');
    root = root.strip_suffix("/v1").unwrap_or(root);
    let url = format!("{root}/v1/{path}");
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| format!("invalid base_url {:?}: {e}", redact_userinfo(base_url)))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "base_url must be http or https, got {:?}",
            parsed.scheme()
        ));
    }
    Ok(url)
}

/// Checks that `url`, the value of the variable `var`, is an absolute http(s) URL with a
/// host, so a typo stops the process at start with the variable's name instead of failing
/// every request (and being retried forever). The URL itself is not shown: it may hold
/// credentials, and the parse error says what is wrong.
pub fn check_http_url(
    var: &str,
    url: &str,
) -> Result<(), whisperfleet_shared::config::ConfigError> {
    let invalid = |why: String| {
        whisperfleet_shared::config::ConfigError::Invalid(format!(
            "{var} must be an http:// or https:// URL: {why}"
        ))
    };
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!("the scheme is {:?}", parsed.scheme())));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("there is no host".into()));
    }
    Ok(())
}

/// Drops `user:password@` from a URL so it can be shown.
pub fn redact_userinfo(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparseable url>".to_owned(),
    }
}

/// `Display` of an error and its sources: reqwest's top level alone says only
/// "error sending request", the useful "connection refused" is further down.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Seconds from `retry-after-ms` or `Retry-After` (delta-seconds or HTTP-date).
pub fn retry_after_seconds(headers: &HeaderMap) -> Option<f64> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(ms / 1000.0);
    }
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?)
}

/// One `Retry-After` value: delta-seconds or an HTTP-date; `None` if it is neither.
pub fn parse_retry_after(value: &str) -> Option<f64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some(secs);
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is valid RFC 2822.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some((delta.num_milliseconds().max(0) as f64) / 1000.0)
}

/// At most `max` characters, the last one an ellipsis when something was cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_pasted_forms() {
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/v1",
            "http://h:1/v1/chat/completions",
        ] {
            assert_eq!(
                openai_endpoint(base, "chat/completions").unwrap(),
                "http://h:1/v1/chat/completions"
            );
        }
        let err = openai_endpoint("ftp://u:secret@h/", "embeddings").unwrap_err();
        assert!(err.contains("http or https") && !err.contains("secret"));
        assert!(
            !openai_endpoint("not a url u:secret@", "x")
                .unwrap_err()
                .contains("secret")
        );
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact_userinfo("http://u:p@h:1/x"), "http://h:1/x");
    }
}
