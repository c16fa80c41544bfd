//! The HTTP API's trust boundary: who may call `/v1/*`, as whom, and how often.
//!
//! With API keys configured (`WHISPERFLEET_HTTP_API_KEYS` / `_FILE`) every `/v1/*` request
//! needs `Authorization: Bearer <key>`; the key's **name** is who calls, the namespace of
//! the identities it creates, and the only thing about it that reaches a log line or an
//! answer. Without keys the gateway serves loopback only ([`check_bind`] refuses anything
//! else at start), and the one caller is the local machine (namespace empty).
//!
//! The presented key is hashed and compared with every configured key's hash in constant
//! time, without stopping at a match, so timing says nothing about how close a guess was.
//! Then the caller's token bucket ([`super::rate`]) is charged: over it, 429 with
//! `Retry-After`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use whisperfleet_shared::config::{ApiKey, Config};

use super::error;
use super::rate::{RateLimit, RateLimiter};

/// Who called, once the key checked out: the key's name, empty for the keyless loopback
/// caller. Handlers take it from the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub namespace: String,
}

/// A configured key as it is kept: its name and the SHA-256 of the key.
struct KeyDigest {
    name: String,
    digest: [u8; 32],
}

pub struct Access {
    keys: Vec<KeyDigest>,
    limiter: RateLimiter,
}

/// Why a request was not let in (never quoting what it sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Missing,
    Invalid,
}

impl Access {
    /// The keys (the file read now) and the rate limit from the configuration, after
    /// checking that a gateway without keys listens on loopback only; says at start which
    /// of the two it is.
    pub async fn from_config(config: &Config) -> anyhow::Result<Self> {
        let keys = config
            .gateway
            .api_keys()
            .context("reading the HTTP API keys")?;
        check_bind(&config.gateway.http_addr, !keys.is_empty()).await?;
        let access = Self::new(
            keys,
            RateLimit {
                requests: config.gateway.http_rate_requests,
                window: config.gateway.http_rate_window,
            },
        );
        if access.keys.is_empty() {
            tracing::info!(
                addr = config.gateway.http_addr,
                "no HTTP API keys (WHISPERFLEET_HTTP_API_KEYS): serving loopback only, without authentication"
            );
        } else {
            let names: Vec<&str> = access.keys.iter().map(|k| k.name.as_str()).collect();
            tracing::info!(keys = ?names, "the HTTP API requires a key (Authorization: Bearer)");
        }
        Ok(access)
    }

    pub fn new(keys: Vec<ApiKey>, limit: RateLimit) -> Self {
        use secrecy::ExposeSecret;
        Self {
            keys: keys
                .into_iter()
                .map(|k| KeyDigest {
                    digest: digest(k.key.expose_secret().as_bytes()),
                    name: k.name,
                })
                .collect(),
            limiter: RateLimiter::new(limit),
        }
    }

    /// The caller a request's `Authorization` header identifies.
    fn identify(&self, header: Option<&HeaderValue>) -> Result<Caller, Refused> {
        if self.keys.is_empty() {
            return Ok(Caller {
                namespace: String::new(),
            });
        }
        let header = header.ok_or(Refused::Missing)?;
        let presented = bearer(header.as_bytes()).ok_or(Refused::Invalid)?;
        let presented = digest(presented);
        // Every key is compared, whatever matched before: `found` is 1 + the index.
        let mut found = 0u32;
        for (i, k) in self.keys.iter().enumerate() {
            let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
            found.conditional_assign(&index, presented.ct_eq(&k.digest));
        }
        match found.checked_sub(1) {
            Some(i) => Ok(Caller {
                namespace: self.keys[i as usize].name.clone(),
            }),
            None => Err(Refused::Invalid),
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Refuses a non-loopback `HTTP_ADDR` when no key is configured: an open API would let
/// anyone on the network talk as anyone.
pub async fn check_bind(addr: &str, has_keys: bool) -> anyhow::Result<()> {
    if has_keys {
        return Ok(());
    }
    let resolved: Vec<_> = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving WHISPERFLEET_HTTP_ADDR {addr}"))?
        .collect();
    if resolved.is_empty() || resolved.iter().any(|a| !a.ip().is_loopback()) {
        anyhow::bail!(
            "WHISPERFLEET_HTTP_ADDR {addr} is reachable beyond this machine, and no HTTP API keys \
             are configured: set WHISPERFLEET_HTTP_API_KEYS (name=key,…) or \
             WHISPERFLEET_HTTP_API_KEYS_FILE, or listen on a loopback address (127.0.0.1:8080)"
        );
    }
    Ok(())
}

/// The middleware of every `/v1/*` route: identify the caller, charge its bucket, hand the
/// [`Caller`] to the handler.
pub async fn guard(State(access): State<Arc<Access>>, mut req: Request, next: Next) -> Response {
    let caller = match access.identify(req.headers().get(AUTHORIZATION)) {
        Ok(c) => c,
        Err(refused) => {
            let (message, challenge) = match refused {
                Refused::Missing => (
                    "this API needs a key: send Authorization: Bearer <key>",
                    r#"Bearer realm="whisperfleet""#,
                ),
                Refused::Invalid => (
                    "the API key is not valid (send Authorization: Bearer <key>)",
                    r#"Bearer realm="whisperfleet", error="invalid_token""#,
                ),
            };
            tracing::info!(reason = ?refused, path = req.uri().path(), "HTTP request refused: no valid API key");
            let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            return resp;
        }
    };
    if let Err(limited) = access.limiter.take(&caller.namespace, Instant::now()) {
        let limit = access.limiter.limit();
        let who = if caller.namespace.is_empty() {
            "the loopback caller".to_string()
        } else {
            format!("API key {:?}", caller.namespace)
        };
        tracing::info!(
            key = caller.namespace,
            retry_after_s = limited.retry_after_s,
            "HTTP request over its rate limit"
        );
        let mut resp = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "{who} is over its limit of {} requests per {} s (WHISPERFLEET_HTTP_RATE_REQUESTS per WHISPERFLEET_HTTP_RATE_WINDOW_S); retry in {} s",
                limit.requests,
                limit.window.as_secs(),
                limited.retry_after_s
            ),
        );
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(limited.retry_after_s));
        return resp;
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn access(keys: &str) -> Access {
        Access::new(
            whisperfleet_shared::config::api_keys::parse_list(keys).unwrap(),
            RateLimit {
                requests: 0,
                window: Duration::from_secs(1),
            },
        )
    }

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn the_right_key_names_its_caller() {
        let a = access("acme=aaaaaaaaaaaaaaaa1,beta=bbbbbbbbbbbbbbbb2");
        for (h, name) in [
            ("Bearer aaaaaaaaaaaaaaaa1", "acme"),
            ("bearer bbbbbbbbbbbbbbbb2", "beta"),
            ("BEARER  bbbbbbbbbbbbbbbb2 ", "beta"),
        ] {
            assert_eq!(a.identify(Some(&header(h))).unwrap().namespace, name, "{h}");
        }
    }

    #[test]
    fn missing_wrong_or_malformed_keys_are_refused() {
        let a = access("acme=aaaaaaaaaaaaaaaa1");
        assert_eq!(a.identify(None), Err(Refused::Missing));
        for h in [
            "Bearer aaaaaaaaaaaaaaaa",
            "Bearer aaaaaaaaaaaaaaaa12",
            "Bearer ",
            "Basic aaaaaaaaaaaaaaaa1",
            "aaaaaaaaaaaaaaaa1",
            "Bearer acme",
        ] {
            assert_eq!(a.identify(Some(&header(h))), Err(Refused::Invalid), "{h}");
        }
    }

    #[test]
    fn without_keys_everyone_is_the_loopback_caller() {
        let a = access("");
        let c = a.identify(Some(&header("Bearer whatever"))).unwrap();
        assert_eq!(c.namespace, "");
    }

    #[tokio::test]
    async fn only_loopback_without_keys() {
        for addr in ["127.0.0.1:0", "[::1]:0", "localhost:0"] {
            check_bind(addr, false).await.unwrap();
        }
        for addr in ["0.0.0.0:8080", "[::]:8080"] {
            let err = check_bind(addr, false).await.unwrap_err().to_string();
            assert!(err.contains("WHISPERFLEET_HTTP_API_KEYS"), "{err}");
            check_bind(addr, true).await.unwrap();
        }
    }
}
