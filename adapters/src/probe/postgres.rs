//! PostgreSQL: reachable with the configured URL, its version, every migration this build
//! ships applied (compared with sqlx's `_sqlx_migrations`, never applied from here), and
//! whether any character was imported.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use whisperfleet_shared::config::Config;

use super::{Check, host_port};
use crate::characters::postgres::MIGRATOR;

const B: &str = "postgres";
const VAR: &str = "WHISPERFLEET_DATABASE_URL";

pub async fn checks(config: &Config, url: &SecretString) -> Vec<Check> {
    let raw = url.expose_secret();
    let at = host_port(raw, 5432);
    let options: PgConnectOptions = match raw.parse() {
        Ok(o) => o,
        Err(e) => {
            return vec![Check::fail(
                B,
                "reachable",
                format!("{VAR} is not a PostgreSQL URL: {e}"),
                format!("set {VAR}=postgres://user:password@host:5432/database"),
            )];
        }
    };
    let timeout = config.backends.database_timeout;
    let mut conn = match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return vec![connect_failure(&e, &at, options.get_database())],
        Err(_) => {
            return vec![Check::fail(
                B,
                "reachable",
                format!("{VAR}: no answer from {at} within {timeout:?} — is PostgreSQL running?"),
                format!("check {VAR} and the network, or raise WHISPERFLEET_DATABASE_TIMEOUT_MS"),
            )];
        }
    };
    let mut out = Vec::new();
    let version: Result<String, _> = tokio::time::timeout(
        timeout,
        sqlx::query_scalar("SHOW server_version").fetch_one(&mut conn),
    )
    .await
    .map_err(|_| "no answer".to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    out.push(Check::ok(
        B,
        "reachable",
        format!(
            "PostgreSQL {} at {at}, database {:?}",
            version.unwrap_or_else(|e| format!("(version unknown: {e})")),
            options.get_database().unwrap_or_default()
        ),
    ));
    out.push(migrations(&mut conn, timeout).await);
    if let Ok(Ok(n)) = tokio::time::timeout(
        timeout,
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM characters").fetch_one(&mut conn),
    )
    .await
    {
        out.push(if n == 0 {
            Check::warn(
                B,
                "characters",
                "no character is imported: every turn is rejected",
                "whisperfleet characters import characters/",
            )
        } else {
            Check::ok(B, "characters", format!("{n} character(s)"))
        });
    }
    let _ = tokio::time::timeout(timeout, conn.close()).await;
    out
}

fn connect_failure(e: &sqlx::Error, at: &str, database: Option<&str>) -> Check {
    let db = database.unwrap_or_default();
    if let sqlx::Error::Io(io) = e {
        return Check::fail(
            B,
            "reachable",
            format!(
                "{VAR}: {} — is PostgreSQL running?",
                super::io_words(io, at)
            ),
            format!("start PostgreSQL, or point {VAR} at the host and port it listens on"),
        );
    }
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    match code.as_deref() {
        // invalid_catalog_name
        Some("3D000") => Check::fail(
            B,
            "reachable",
            format!("{VAR}: database {db:?} does not exist at {at}"),
            format!("createdb {db} (or fix the database name, the URL's path, in {VAR})"),
        ),
        // invalid_password, invalid_authorization_specification
        Some("28P01" | "28000") => Check::fail(
            B,
            "reachable",
            format!("{VAR}: PostgreSQL at {at} refused the login"),
            format!("put the right user and password in {VAR}"),
        ),
        _ => Check::fail(
            B,
            "reachable",
            format!("{VAR}: cannot connect to {at}: {e}"),
            format!("check {VAR}"),
        ),
    }
}

/// Every migration of this build applied and successful (what the worker applies at start).
async fn migrations(conn: &mut PgConnection, timeout: std::time::Duration) -> Check {
    let shipped: BTreeMap<i64, String> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    let applied = tokio::time::timeout(
        timeout,
        sqlx::query_as::<_, (i64, bool)>("SELECT version, success FROM _sqlx_migrations")
            .fetch_all(&mut *conn),
    )
    .await;
    let applied: BTreeMap<i64, bool> = match applied {
        Ok(Ok(rows)) => rows.into_iter().collect(),
        // undefined_table: nothing was ever applied.
        Ok(Err(e))
            if e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P01") =>
        {
            BTreeMap::new()
        }
        Ok(Err(e)) => {
            return Check::fail(
                B,
                "migrations",
                format!("cannot read _sqlx_migrations: {e}"),
                "check that the user in WHISPERFLEET_DATABASE_URL may read the database",
            );
        }
        Err(_) => {
            return Check::fail(
                B,
                "migrations",
                "no answer while reading _sqlx_migrations",
                "check the database's load",
            );
        }
    };
    let missing: Vec<String> = shipped
        .iter()
        .filter(|(v, _)| !applied.contains_key(v))
        .map(|(v, d)| format!("{v} {d}"))
        .collect();
    let failed: Vec<String> = applied
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(v, _)| v.to_string())
        .collect();
    let unknown = applied.keys().filter(|v| !shipped.contains_key(v)).count();
    if !failed.is_empty() {
        return Check::fail(
            B,
            "migrations",
            format!("migration(s) {} failed half-way", failed.join(", ")),
            "look at the database's log, repair by hand, then delete the failed row from _sqlx_migrations",
        );
    }
    if !missing.is_empty() {
        return Check::fail(
            B,
            "migrations",
            format!(
                "{} of {} migrations not applied: {}",
                missing.len(),
                shipped.len(),
                missing.join(", ")
            ),
            "start a worker or run `whisperfleet characters list` with this configuration: both apply them",
        );
    }
    let mut c = Check::ok(
        B,
        "migrations",
        format!("all {} migrations applied", shipped.len()),
    );
    if unknown > 0 {
        c = Check::warn(
            B,
            "migrations",
            format!(
                "{unknown} applied migration(s) this build does not know: a newer version wrote this database"
            ),
            "upgrade this binary to the fleet's version",
        );
    }
    c
}
