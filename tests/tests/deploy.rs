//! The deploy files checked against the code, without a Docker engine: the compose file's
//! services, variables, URLs and dependencies; the Grafana dashboard's queries against the
//! points the code writes; the Dockerfile against the workspace's targets; the README's
//! Deploy section. (`scripts/test` also runs the real Compose v2 parser over the file.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

const COMPOSE: &str = "deploy/docker-compose.yml";
const ENV_EXAMPLE: &str = "deploy/.env.example";
const DOCKERFILE: &str = "deploy/Dockerfile";
const DASHBOARD: &str = "deploy/grafana/dashboards/whisperfleet.json";
const DATASOURCE: &str = "deploy/grafana/provisioning/datasources/influxdb.yml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(root().join(rel)).with_context(|| format!("reading {rel}"))
}

/// A YAML file with its anchors and `<<` merge keys resolved, as Compose reads it.
fn yaml(rel: &str) -> anyhow::Result<Value> {
    let mut v: serde_norway::Value =
        serde_norway::from_str(&read(rel)?).with_context(|| format!("parsing {rel}"))?;
    v.apply_merge()?;
    Ok(serde_json::to_value(v)?)
}

fn services(compose: &Value) -> anyhow::Result<&serde_json::Map<String, Value>> {
    compose["services"]
        .as_object()
        .context("compose file has no services")
}

fn str_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A service's environment as name → value (`None`: passed through from `.env` when set).
fn environment(svc: &Value) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    match &svc["environment"] {
        Value::Object(m) => {
            for (k, v) in m {
                let v = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                out.insert(k.clone(), v);
            }
        }
        Value::Array(a) => {
            for item in a.iter().filter_map(Value::as_str) {
                match item.split_once('=') {
                    Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                    None => out.insert(item.to_string(), None),
                };
            }
        }
        _ => {}
    }
    out
}

/// The program a fleet service runs (first word of its command).
fn program(svc: &Value) -> Option<String> {
    str_list(&svc["command"]).into_iter().next()
}

// ------------------------------------------------------------------ .env.example

struct EnvExample {
    /// Set in the example (`NAME=value`); secrets are listed empty.
    set: BTreeMap<String, String>,
    /// Only mentioned, commented out (`# NAME=value`): passed through when a user sets it.
    commented: BTreeSet<String>,
}

/// `NAME=value` or `# NAME=value` → (commented, name, value).
fn env_line(line: &str) -> Option<(bool, &str, &str)> {
    let (commented, body) = match line.strip_prefix('#') {
        Some(rest) => (true, rest.trim()),
        None => (false, line.trim()),
    };
    let (name, value) = body.split_once('=')?;
    let is_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    is_name.then_some((commented, name, value))
}

fn env_example() -> anyhow::Result<EnvExample> {
    let text = read(ENV_EXAMPLE)?;
    let mut set = BTreeMap::new();
    let mut commented = BTreeSet::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((is_comment, name, value)) = env_line(line) else {
            continue;
        };
        // Every variable is explained: its block (up to a blank line) has a comment that is
        // not itself a variable.
        let explained = lines[..i]
            .iter()
            .rev()
            .take_while(|l| !l.trim().is_empty())
            .any(|l| l.starts_with('#') && env_line(l).is_none());
        ensure!(
            explained,
            "{ENV_EXAMPLE}: {name} has no comment explaining it"
        );
        if is_comment {
            commented.insert(name.to_string());
        } else {
            set.insert(name.to_string(), value.to_string());
        }
    }
    Ok(EnvExample { set, commented })
}

/// One `${…}` reference found while interpolating.
struct Reference {
    name: String,
    /// `${NAME:?message}` / `${NAME?message}`: Compose refuses to run without it.
    required: bool,
}

/// Compose-style interpolation (`$$`, `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`,
/// `${NAME:?message}`, `${NAME:+alt}`) with the example's values; required variables left
/// empty there (the secrets) get a stand-in, as a filled-in `.env` would give them.
fn interpolate(s: &str, vars: &BTreeMap<String, String>, refs: &mut Vec<Reference>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (expr, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => (inner, ""),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let name_end = expr
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(expr.len());
        let (name, op) = expr.split_at(name_end);
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        let value = vars.get(name).map(String::as_str);
        let empty = value.is_none_or(str::is_empty);
        let required = op.starts_with(":?") || op.starts_with('?');
        let resolved = if let Some(d) = op.strip_prefix(":-") {
            if empty {
                d.to_string()
            } else {
                value.unwrap().into()
            }
        } else if let Some(d) = op.strip_prefix('-') {
            value.unwrap_or(d).to_string()
        } else if let Some(alt) = op.strip_prefix(":+") {
            if empty {
                String::new()
            } else {
                alt.to_string()
            }
        } else if required && empty {
            format!("stand-in-for-{}", name.to_ascii_lowercase())
        } else {
            value.unwrap_or_default().to_string()
        };
        refs.push(Reference {
            name: name.to_string(),
            required,
        });
        out.push_str(&resolved);
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Every string in a JSON tree.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

// ------------------------------------------------------------------ compose: services

#[test]
fn every_service_has_a_healthcheck_restart_policy_and_limits() -> anyhow::Result<()> {
    let compose = yaml(COMPOSE)?;
    for (name, svc) in services(&compose)? {
        let restart = svc["restart"].as_str().unwrap_or("");
        let hc = &svc["healthcheck"];
        let one_shot = name == "migrate";
        if one_shot {
            ensure!(
                restart == "no",
                "{name}: a one-shot job must be restart: \"no\""
            );
        } else {
            ensure!(
                matches!(restart, "always" | "unless-stopped" | "on-failure"),
                "{name}: restart policy {restart:?}"
            );
            ensure!(
                hc["disable"] != json!(true) && !str_list(&hc["test"]).is_empty(),
                "{name} has no healthcheck"
            );
            ensure!(
                str_list(&hc["test"]).first().map(String::as_str) != Some("NONE"),
                "{name}: healthcheck disabled"
            );
        }
        let limits = &svc["deploy"]["resources"]["limits"];
        ensure!(
            limits["cpus"].is_string() || limits["cpus"].is_number(),
            "{name}: no cpu limit"
        );
        ensure!(limits["memory"].is_string(), "{name}: no memory limit");
    }
    Ok(())
}

#[test]
fn depends_on_waits_for_health_or_completion() -> anyhow::Result<()> {
    let compose = yaml(COMPOSE)?;
    let all = services(&compose)?;
    for (name, svc) in all {
        let Some(deps) = svc.get("depends_on") else {
            continue;
        };
        let deps = deps
            .as_object()
            .with_context(|| format!("{name}: depends_on must name a condition per service"))?;
        for (dep, how) in deps {
            let target = all
                .get(dep)
                .with_context(|| format!("{name} depends on unknown service {dep}"))?;
            match how["condition"].as_str() {
                Some("service_healthy") => ensure!(
                    !str_list(&target["healthcheck"]["test"]).is_empty(),
                    "{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                ),
                Some("service_completed_successfully") => ensure!(
                    target["restart"].as_str() == Some("no"),
                    "{name} waits for {dep} to complete, but {dep} is not a one-shot job"
                ),
                other => bail!("{name} → {dep}: condition {other:?}"),
            }
        }
    }
    // Workers need the schema and the characters in place.
    ensure!(
        all["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully",
        "worker must wait for migrate"
    );
    Ok(())
}

#[test]
fn the_worker_scales() -> anyhow::Result<()> {
    let compose = yaml(COMPOSE)?;
    let mut workers = 0;
    for (name, svc) in services(&compose)? {
        if program(svc).as_deref() != Some("worker") {
            continue;
        }
        workers += 1;
        for fixed in ["container_name", "ports", "hostname"] {
            ensure!(
                svc.get(fixed).is_none(),
                "{name} runs workers but has a fixed {fixed}: --scale would clash"
            );
        }
    }
    ensure!(workers == 1, "one worker service, scaled with --scale");
    Ok(())
}

#[test]
fn fleet_processes_drain_before_compose_kills_them() -> anyhow::Result<()> {
    let compose = yaml(COMPOSE)?;
    let example = env_example()?;
    for (name, svc) in services(&compose)? {
        if !matches!(
            program(svc).as_deref(),
            Some("gateway" | "worker" | "metrics-writer")
        ) {
            continue;
        }
        let env = environment(svc);
        let grace_ms: u64 = match env.get("WHISPERFLEET_SHUTDOWN_GRACE_MS") {
            Some(Some(v)) => interpolate(v, &example.set, &mut Vec::new()).parse()?,
            _ => whisperfleet_shared::config::Config::default()
                .process
                .shutdown_grace
                .as_millis() as u64,
        };
        let stop = svc["stop_grace_period"].as_str().unwrap_or("10s");
        let stop_s: u64 = stop
            .strip_suffix('s')
            .with_context(|| format!("{name}: stop_grace_period {stop} in seconds"))?
            .parse()?;
        ensure!(
            stop_s * 1000 > grace_ms,
            "{name}: compose kills after {stop}, before the {grace_ms} ms drain"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ compose: variables

#[test]
fn whisperfleet_variables_are_known_and_required_ones_are_set() -> anyhow::Result<()> {
    use whisperfleet_shared::config::{Config, ENV_PREFIX};
    let known: BTreeSet<String> = Config::known_keys()
        .map(|k| format!("{ENV_PREFIX}{}", k.to_ascii_uppercase()))
        .collect();
    let compose = yaml(COMPOSE)?;
    let mut seen = Vec::new();
    for (name, svc) in services(&compose)? {
        let env = environment(svc);
        for var in env.keys().filter(|k| k.starts_with(ENV_PREFIX)) {
            ensure!(
                known.contains(var),
                "{name} sets {var}, which the config does not read"
            );
        }
        let required: &[&str] = match program(svc).as_deref() {
            // It listens beyond loopback (checked below), which needs API keys.
            Some("gateway") => &["AMQP_URL", "REDIS_URL", "HTTP_API_KEYS"],
            Some("worker") => &["AMQP_URL", "REDIS_URL", "DATABASE_URL"],
            Some("metrics-writer") => &["AMQP_URL", "REDIS_URL", "INFLUX_URL"],
            Some("whisperfleet") => &["DATABASE_URL"],
            _ => &[],
        };
        for r in required {
            let var = format!("{ENV_PREFIX}{r}");
            ensure!(
                matches!(env.get(&var), Some(Some(_))),
                "{name} needs {var} to be set"
            );
        }
        seen.extend(env.keys().cloned());
    }
    // The gateway listens beyond its container's loopback.
    let gateway = &services(&compose)?["gateway"];
    let addr = environment(gateway)
        .remove("WHISPERFLEET_HTTP_ADDR")
        .flatten()
        .context("gateway: WHISPERFLEET_HTTP_ADDR")?;
    ensure!(
        addr.starts_with("0.0.0.0:") || addr.starts_with("[::]:"),
        "gateway listens on {addr}: unreachable from outside its container"
    );
    // The image and the example set only names the config reads, too.
    for line in read(DOCKERFILE)?.lines() {
        if let Some(rest) = line.trim().strip_prefix("ENV ") {
            for var in rest
                .split_whitespace()
                .filter_map(|kv| kv.split('=').next())
            {
                ensure!(
                    !var.starts_with(ENV_PREFIX) || known.contains(var),
                    "Dockerfile sets {var}, which the config does not read"
                );
            }
        }
    }
    let example = env_example()?;
    for var in example.set.keys().chain(&example.commented) {
        ensure!(
            !var.starts_with(ENV_PREFIX) || known.contains(var),
            "{ENV_EXAMPLE} lists {var}, which the config does not read"
        );
    }
    ensure!(!seen.is_empty());
    Ok(())
}

#[test]
fn env_example_lists_every_variable_and_secrets_stay_out_of_the_file() -> anyhow::Result<()> {
    let text = read(COMPOSE)?;
    let compose = yaml(COMPOSE)?;
    let example = env_example()?;
    let mut refs = Vec::new();
    let mut all = Vec::new();
    strings(&compose, &mut all);
    for s in &all {
        interpolate(s, &example.set, &mut refs);
    }
    let mut used: BTreeSet<String> = refs.iter().map(|r| r.name.clone()).collect();
    for svc in services(&compose)?.values() {
        for (var, value) in environment(svc) {
            if value.is_none() {
                used.insert(var);
            }
        }
    }
    let listed: BTreeSet<String> = example
        .set
        .keys()
        .chain(&example.commented)
        .cloned()
        .collect();
    for var in &used {
        ensure!(
            listed.contains(var),
            "{COMPOSE} uses {var}, which {ENV_EXAMPLE} does not list"
        );
    }
    for var in &listed {
        ensure!(
            used.contains(var),
            "{ENV_EXAMPLE} lists {var}, which {COMPOSE} does not use"
        );
    }
    // Secrets: required (no default), empty in the example, never written in the file.
    let secret = |name: &str| {
        ["PASS", "TOKEN", "SECRET", "API_KEY", "AUTH"]
            .iter()
            .any(|w| name.contains(w))
    };
    for r in &refs {
        if secret(&r.name) {
            ensure!(
                r.required,
                "{} is a secret: use ${{{}:?…}}, not a default",
                r.name,
                r.name
            );
            ensure!(
                example.set.get(&r.name).is_some_and(String::is_empty),
                "{ENV_EXAMPLE} must leave the secret {} empty",
                r.name
            );
        }
    }
    for (name, svc) in services(&compose)? {
        for (var, value) in environment(svc) {
            let Some(value) = value else { continue };
            if secret(&var) {
                ensure!(
                    value.starts_with("${")
                        && value.ends_with('}')
                        && value.matches("${").count() == 1,
                    "{name}: {var} must come from .env, not be written in the file"
                );
            }
            // A URL's password is a required variable (the example leaves it empty, so it
            // comes out as the stand-in).
            let url = interpolate(&value, &example.set, &mut Vec::new());
            if let Some((_, rest)) = url.split_once("://")
                && let Some((userinfo, _)) = rest.split_once('@')
            {
                ensure!(
                    userinfo
                        .split_once(':')
                        .is_some_and(|(_, pw)| pw.starts_with("stand-in-for-")),
                    "{name}: the password in {var} must come from .env"
                );
            }
        }
    }
    ensure!(!text.contains("guest:guest"), "no guest/guest");
    let rabbit = environment(&services(&compose)?["rabbitmq"]);
    let user = interpolate(
        rabbit["RABBITMQ_DEFAULT_USER"]
            .as_deref()
            .unwrap_or("guest"),
        &example.set,
        &mut Vec::new(),
    );
    ensure!(user != "guest", "RabbitMQ must not run as guest");
    ensure!(
        rabbit
            .get("RABBITMQ_DEFAULT_PASS")
            .is_some_and(Option::is_some),
        "RabbitMQ needs its password from .env"
    );
    Ok(())
}

// ------------------------------------------------------------------ compose: URLs and ports

/// Host and port of a URL, with the scheme's default port.
fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let (scheme, rest) = url.split_once("://").context("not a URL")?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default = match scheme {
        "amqp" => 5672,
        "amqps" => 5671,
        "redis" => 6379,
        "rediss" => 6380,
        "postgres" | "postgresql" => 5432,
        "http" => 80,
        "https" => 443,
        other => bail!("unknown scheme {other} in {url}"),
    };
    Ok(match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().with_context(|| url.to_string())?),
        None => (hostport.to_string(), default),
    })
}

/// Ports a service listens on inside the network: `expose` and the container side of `ports`.
fn listening(svc: &Value) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for p in str_list(&svc["expose"]) {
        out.extend(p.parse::<u16>().ok());
    }
    for p in str_list(&svc["ports"]) {
        out.extend(
            p.rsplit(':')
                .next()
                .and_then(|c| c.split('/').next())
                .and_then(|c| c.parse::<u16>().ok()),
        );
    }
    out
}

#[test]
fn urls_point_at_services_and_ports_they_listen_on() -> anyhow::Result<()> {
    let compose = yaml(COMPOSE)?;
    let example = env_example()?;
    let all = services(&compose)?;
    let mut checked = 0;
    let mut check = |from: &str, var: &str, url: &str| -> anyhow::Result<()> {
        let url = interpolate(url, &example.set, &mut Vec::new());
        let (host, port) = host_port(&url).with_context(|| format!("{from}: {var}"))?;
        let target = all
            .get(&host)
            .with_context(|| format!("{from}: {var} points at {host}, which is no service"))?;
        ensure!(
            listening(target).contains(&port),
            "{from}: {var} uses {host}:{port}, but {host} listens on {:?}",
            listening(target)
        );
        let deps = &all[from]["depends_on"];
        ensure!(
            deps.get(&host).is_some(),
            "{from} connects to {host} ({var}) but does not wait for it"
        );
        checked += 1;
        Ok(())
    };
    for (name, svc) in all {
        for (var, value) in environment(svc) {
            if let Some(v) = value.filter(|v| v.contains("://")) {
                check(name, &var, &v)?;
            }
        }
    }
    let ds = yaml(DATASOURCE)?;
    for d in ds["datasources"].as_array().context("datasources")? {
        check(
            "grafana",
            "datasource url",
            d["url"].as_str().context("url")?,
        )?;
    }
    ensure!(checked >= 8, "only {checked} URLs found");

    // The gateway's own port: where it binds, what it exposes, what is published.
    let gateway = &all["gateway"];
    let addr = environment(gateway)["WHISPERFLEET_HTTP_ADDR"]
        .clone()
        .context("gateway address")?;
    let port: u16 = addr.rsplit_once(':').context("host:port")?.1.parse()?;
    ensure!(listening(gateway).contains(&port), "gateway exposes {port}");
    ensure!(
        str_list(&gateway["ports"])
            .iter()
            .any(|p| p.ends_with(&format!(":{port}"))),
        "gateway publishes {port}"
    );
    Ok(())
}

#[test]
fn bind_mounts_exist_and_the_image_is_built_here() -> anyhow::Result<()> {
    let compose = yaml(COMPOSE)?;
    let deploy = root().join("deploy");
    for (name, svc) in services(&compose)? {
        for v in str_list(&svc["volumes"]) {
            let src = v.split(':').next().unwrap_or("");
            if src.starts_with('.') || src.starts_with('/') {
                ensure!(
                    deploy.join(src).exists(),
                    "{name} mounts {src}, which does not exist"
                );
            }
        }
        if let Some(build) = svc.get("build") {
            let context = deploy.join(build["context"].as_str().context("build context")?);
            ensure!(
                context.join("Cargo.toml").exists(),
                "{name}: build context is the workspace root"
            );
            ensure!(
                context
                    .join(build["dockerfile"].as_str().unwrap_or("Dockerfile"))
                    .canonicalize()?
                    == root().join(DOCKERFILE).canonicalize()?,
                "{name} builds {DOCKERFILE}"
            );
        }
    }
    Ok(())
}

#[test]
fn qdrant_server_is_within_one_minor_of_the_client() -> anyhow::Result<()> {
    let compose = yaml(COMPOSE)?;
    let image = services(&compose)?["qdrant"]["image"]
        .as_str()
        .context("qdrant image")?
        .to_string();
    let tag = image
        .rsplit_once(":v")
        .context("qdrant image pinned as :vX.Y.Z")?
        .1;
    let lock = read("Cargo.lock")?;
    let client = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"qdrant-client\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .context("qdrant-client in Cargo.lock")?
        .trim_matches('"')
        .to_string();
    let minor = |v: &str| -> anyhow::Result<(u32, u32)> {
        let mut it = v.split('.');
        Ok((
            it.next().context("major")?.parse()?,
            it.next().context("minor")?.parse()?,
        ))
    };
    let (sm, sn) = minor(tag)?;
    let (cm, cn) = minor(&client)?;
    ensure!(
        sm == cm && sn.abs_diff(cn) <= 1,
        "qdrant server {tag} vs client {client}: more than one minor apart"
    );
    Ok(())
}

// ------------------------------------------------------------------ Grafana
// The checks of queries against what the code writes live in `whisperfleet::grafana`,
// which `whisperfleet doctor` runs too.

use whisperfleet::grafana::{alert_rules, check_query, flux_names, written};

/// The first `"…"` literal at the start of `s`.
fn first_quoted(s: &str) -> Option<String> {
    let s = s.trim_start().strip_prefix('"')?;
    Some(s[..s.find('"')?].to_string())
}

fn dashboard_queries() -> anyhow::Result<Vec<(String, String, String)>> {
    let dash: Value = serde_json::from_str(&read(DASHBOARD)?).context("dashboard JSON")?;
    Ok(whisperfleet::grafana::dashboard_queries(&dash)?)
}

#[test]
fn dashboard_parses_and_uses_the_provisioned_datasource() -> anyhow::Result<()> {
    let queries = dashboard_queries()?;
    ensure!(queries.len() >= 10, "only {} queries", queries.len());
    let ds = yaml(DATASOURCE)?;
    let d = &ds["datasources"][0];
    ensure!(d["type"] == "influxdb" && d["jsonData"]["version"] == "Flux");
    let uid = d["uid"].as_str().context("datasource uid")?;
    for (title, q_uid, query) in &queries {
        ensure!(
            q_uid == uid,
            "panel {title:?} uses datasource {q_uid}, not {uid}"
        );
        ensure!(
            query.contains("from(bucket: v.defaultBucket)"),
            "panel {title:?} reads the provisioned bucket"
        );
    }
    // Grafana expands $VARS in provisioning files from its own environment.
    let compose = yaml(COMPOSE)?;
    let grafana = environment(&services(&compose)?["grafana"]);
    let text = read(DATASOURCE)?;
    for (i, _) in text.match_indices("${") {
        let name = &text[i + 2..i + 2 + text[i + 2..].find('}').context("}")?];
        ensure!(
            grafana.get(name).is_some_and(Option::is_some),
            "{DATASOURCE} reads ${name}, which the grafana service does not set"
        );
    }
    Ok(())
}

#[test]
fn dashboard_queries_name_what_the_code_writes() -> anyhow::Result<()> {
    let written = written()?;
    let mut shown = BTreeSet::new();
    for (title, _, query) in dashboard_queries()? {
        let n = check_query(&format!("panel {title:?}"), &query, &written)?;
        shown.extend(n.measurements);
    }
    for m in written.keys() {
        ensure!(shown.contains(m), "no panel shows measurement {m:?}");
    }
    // Every dead-letter queue is on the dead-letters panel (a new one is easy to forget).
    let dead_panel: BTreeSet<String> = dashboard_queries()?
        .into_iter()
        .filter(|(title, _, _)| title.to_ascii_lowercase().contains("dead"))
        .flat_map(|(_, _, query)| flux_names(&query).tags.remove("queue").unwrap_or_default())
        .collect();
    for dead in whisperfleet_shared::topology::DEAD_QUEUES {
        ensure!(
            dead_panel.contains(dead),
            "the dead-letters panel does not show {dead}: {dead_panel:?}"
        );
    }
    Ok(())
}

const ALERTING: &str = "deploy/grafana/provisioning/alerting/whisperfleet.yml";

/// The provisioned alerts: five rules (latency regression, backlog, dead letters, a silent
/// writer, missing workers) on the provisioned datasource, each query naming only
/// measurements, fields, tags and queues the code writes, a Discord contact point, and every
/// `${VAR}` set by the grafana service.
#[test]
fn alert_rules_parse_and_name_what_the_code_writes() -> anyhow::Result<()> {
    let doc = yaml(ALERTING)?;
    ensure!(doc["apiVersion"] == 1, "{ALERTING}: apiVersion 1");
    let ds = yaml(DATASOURCE)?;
    let ds_uid = ds["datasources"][0]["uid"]
        .as_str()
        .context("datasource uid")?;
    let written = written()?;
    let rules = alert_rules(&doc)?;
    ensure!(rules.len() >= 5, "only {} alert rules", rules.len());
    let mut watched = BTreeSet::new();
    for (title, queries) in &rules {
        for (uid, query) in queries {
            ensure!(
                uid == ds_uid,
                "rule {title:?} reads datasource {uid}, not {ds_uid}"
            );
            ensure!(
                query.contains("from(bucket: v.defaultBucket)"),
                "rule {title:?} reads the provisioned bucket"
            );
            let n = check_query(&format!("rule {title:?}"), query, &written)?;
            for (of, f) in n.fields {
                watched.insert(format!("{}.{f}", of.unwrap_or_default()));
            }
            for q in n.tags.get("queue").into_iter().flatten() {
                watched.insert(format!("queue {q}"));
            }
        }
    }
    for needed in [
        "delivery.overhead_ms",
        "fleet_queue.ready",
        "fleet_queue.consumers",
        "metrics_writer.points_written",
        "queue turns",
    ] {
        ensure!(
            watched.contains(needed),
            "no alert watches {needed}: {watched:?}"
        );
    }
    for dead in whisperfleet_shared::topology::DEAD_QUEUES {
        ensure!(
            watched.contains(&format!("queue {dead}")),
            "no alert watches dead-letter queue {dead}: {watched:?}"
        );
    }
    let receivers = &doc["contactPoints"][0]["receivers"];
    ensure!(
        receivers[0]["type"] == "discord"
            && receivers[0]["settings"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("${")),
        "a Discord contact point whose webhook comes from the environment: {receivers}"
    );
    ensure!(
        doc["policies"][0]["receiver"] == doc["contactPoints"][0]["name"],
        "the notification policy sends to the contact point"
    );
    // Grafana expands $VARS in provisioning files from its own environment.
    let compose = yaml(COMPOSE)?;
    let grafana = environment(&services(&compose)?["grafana"]);
    let text = read(ALERTING)?;
    for (i, _) in text.match_indices("${") {
        let name = &text[i + 2..i + 2 + text[i + 2..].find('}').context("}")?];
        ensure!(
            grafana.get(name).is_some_and(Option::is_some),
            "{ALERTING} reads ${name}, which the grafana service does not set"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ Dockerfile

/// The Dockerfile's instructions, continuation lines joined and comments dropped.
fn dockerfile() -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in read(DOCKERFILE)?.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    Ok(out)
}

/// `COPY [--flags] SRC… DEST` → (flags, sources, dest).
fn copy_args(inst: &str) -> Option<(Vec<&str>, Vec<&str>, &str)> {
    let rest = inst.strip_prefix("COPY ")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (flags, paths): (Vec<&str>, Vec<&str>) = words.iter().partition(|w| w.starts_with("--"));
    let (dest, sources) = paths.split_last()?;
    Some((flags, sources.to_vec(), dest))
}

struct Workspace {
    /// Package dirs, relative to the root ("" for the root package).
    members: Vec<String>,
    /// (package dir, kind, src_path relative to the root, name).
    targets: Vec<(String, String, String, String)>,
}

fn workspace() -> anyhow::Result<Workspace> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .context("cargo metadata")?;
    ensure!(out.status.success(), "cargo metadata failed");
    let meta: Value = serde_json::from_slice(&out.stdout)?;
    let root = root().canonicalize()?;
    let rel = |p: &str| -> anyhow::Result<String> {
        Ok(Path::new(p)
            .strip_prefix(&root)?
            .to_string_lossy()
            .into_owned())
    };
    let mut ws = Workspace {
        members: Vec::new(),
        targets: Vec::new(),
    };
    for pkg in meta["packages"].as_array().context("packages")? {
        let manifest = rel(pkg["manifest_path"].as_str().context("manifest")?)?;
        let dir = Path::new(&manifest)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        for t in pkg["targets"].as_array().context("targets")? {
            for kind in str_list(&t["kind"]) {
                ws.targets.push((
                    dir.clone(),
                    kind,
                    rel(t["src_path"].as_str().context("src_path")?)?,
                    t["name"].as_str().context("name")?.to_string(),
                ));
            }
        }
        ws.members.push(dir);
    }
    Ok(ws)
}

/// Whether a COPY source covers `path` (the path itself or a directory above it).
fn covers(source: &str, path: &str) -> bool {
    let source = source.trim_end_matches('/');
    source == "." || path == source || path.starts_with(&format!("{source}/"))
}

#[test]
fn dockerfile_copies_what_exists_and_ships_every_binary() -> anyhow::Result<()> {
    let insts = dockerfile()?;
    let ws = workspace()?;
    let builds: Vec<usize> = insts
        .iter()
        .enumerate()
        .filter(|(_, i)| i.starts_with("RUN") && i.contains("cargo build --release"))
        .map(|(n, _)| n)
        .collect();
    ensure!(
        builds.len() == 2,
        "a dependency build and a source build, found {}",
        builds.len()
    );
    let (deps_build, full_build) = (builds[0], builds[1]);
    for b in &builds {
        ensure!(
            insts[*b].contains("--workspace --bins"),
            "builds every binary: {}",
            insts[*b]
        );
    }
    let runtime = insts
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .context("FROM")?;
    ensure!(runtime > full_build, "the runtime stage comes last");

    // Every local COPY source exists; what the builder copied, before which build.
    let mut before_deps = Vec::new();
    let mut builder_sources = Vec::new();
    for (n, inst) in insts.iter().enumerate() {
        let Some((flags, sources, _)) = copy_args(inst) else {
            continue;
        };
        if flags.iter().any(|f| f.starts_with("--from")) {
            continue;
        }
        for s in sources {
            ensure!(root().join(s).exists(), "COPY {s}: no such path");
            if n < deps_build {
                before_deps.push(s.to_string());
            }
            if n < full_build {
                builder_sources.push(s.to_string());
            }
        }
    }
    let copied_before = |p: &str| before_deps.iter().any(|s| covers(s, p));
    let copied = |p: &str| builder_sources.iter().any(|s| covers(s, p));
    ensure!(
        copied_before("Cargo.lock"),
        "Cargo.lock before the dependency build"
    );
    for m in &ws.members {
        let manifest = if m.is_empty() {
            "Cargo.toml".to_string()
        } else {
            format!("{m}/Cargo.toml")
        };
        ensure!(
            copied_before(&manifest),
            "{manifest} must be copied before the dependency build"
        );
    }
    // Sources of the binaries (and the libraries they use) reach the second build only,
    // so a source edit never invalidates the dependency layer.
    for (dir, kind, src, name) in &ws.targets {
        match kind.as_str() {
            "bin" | "lib" => {
                let dir = Path::new(src).parent().unwrap().to_string_lossy();
                ensure!(copied(&dir), "{kind} {name}: {dir} is not copied");
                ensure!(
                    !copied_before(&dir),
                    "{dir} is copied before the dependency build: every edit rebuilds all"
                );
            }
            // Targets a manifest names explicitly must exist for cargo to read it at all.
            "bench" | "example" | "test" => {
                let manifest = read(&Path::new(dir).join("Cargo.toml").to_string_lossy())?;
                if manifest.contains(&format!("[[{kind}]]")) {
                    ensure!(
                        copied_before(src),
                        "{kind} {name} ({src}) is named in its manifest: copy it before the dependency build"
                    );
                }
            }
            _ => {}
        }
    }
    // What the macros read at compile time (include_str!, include_bytes!, sqlx::migrate!).
    for m in &ws.members {
        for path in compile_time_inputs(&root().join(m))? {
            let path = path
                .strip_prefix(root().canonicalize()?)?
                .to_string_lossy()
                .into_owned();
            ensure!(
                copied(&path),
                "{path} is read at compile time but not copied"
            );
        }
    }

    // The runtime image: every binary the workspace defines, nothing else, and no toolchain.
    let bins: BTreeSet<&str> = ws
        .targets
        .iter()
        .filter(|(_, k, _, _)| k == "bin")
        .map(|(_, _, _, n)| n.as_str())
        .collect();
    ensure!(bins.len() >= 4, "binaries: {bins:?}");
    let mut shipped = BTreeSet::new();
    for inst in &insts[runtime..] {
        if let Some((flags, sources, _)) = copy_args(inst)
            && flags.iter().any(|f| f.starts_with("--from=builder"))
        {
            shipped.extend(sources.iter().filter_map(|s| s.rsplit('/').next()));
        }
    }
    ensure!(
        shipped == bins,
        "image ships {shipped:?}, workspace builds {bins:?}"
    );
    for b in &bins {
        ensure!(
            insts[full_build].contains(&format!("target/release/{b}")),
            "the builder collects {b}"
        );
    }
    let runtime_insts = &insts[runtime..];
    ensure!(runtime_insts[0].contains("-slim"), "slim runtime base");
    ensure!(
        runtime_insts
            .iter()
            .any(|i| i.starts_with("HEALTHCHECK") && i.contains("CMD")),
        "HEALTHCHECK"
    );
    let user = runtime_insts
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .context("USER")?;
    ensure!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "runs as root"
    );
    for i in runtime_insts {
        if let Some((_, install)) = i.split_once("apt-get install") {
            let pkgs: Vec<&str> = install
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .collect();
            ensure!(pkgs == ["ca-certificates"], "runtime installs {pkgs:?}");
        }
    }
    ensure!(
        runtime_insts
            .iter()
            .filter_map(|i| copy_args(i))
            .any(|(_, s, _)| s.contains(&"characters")),
        "characters/ is in the image for the import job"
    );

    // Compose runs programs the image has.
    let compose = yaml(COMPOSE)?;
    for (name, svc) in services(&compose)? {
        if svc.get("build").is_some() {
            let p = program(svc).with_context(|| format!("{name}: command"))?;
            ensure!(
                bins.contains(p.as_str()),
                "{name} runs {p}, not in the image"
            );
        }
    }
    Ok(())
}

/// Files and directories a package's sources read at compile time.
fn compile_time_inputs(pkg: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![pkg.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let src = std::fs::read_to_string(&path)?;
            for (mac, base) in [
                ("include_str!(", path.parent().unwrap()),
                ("include_bytes!(", path.parent().unwrap()),
                ("migrate!(", pkg),
            ] {
                for (i, _) in src.match_indices(mac) {
                    if let Some(rel) = first_quoted(&src[i + mac.len()..]) {
                        let p = base.join(&rel);
                        out.push(
                            p.canonicalize()
                                .with_context(|| format!("{} reads {rel}", path.display()))?,
                        );
                    }
                }
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ README

#[test]
fn readme_deploy_section_is_the_two_commands() -> anyhow::Result<()> {
    let readme = read("README.md")?;
    let start = readme
        .find("\n## Deploy\n")
        .context("README has no ## Deploy")?;
    let body = &readme[start + "\n## Deploy\n".len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut code = Vec::new();
    let mut prose = String::new();
    let mut in_code = false;
    for line in body.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if in_code {
            code.push(line.trim());
        } else {
            prose.push_str(line);
            prose.push(' ');
        }
    }
    ensure!(
        code == [
            "docker compose -f deploy/docker-compose.yml up -d",
            "docker compose -f deploy/docker-compose.yml up -d --scale worker=4",
        ],
        "Deploy commands: {code:?}"
    );
    ensure!(prose.contains("docs/DEPLOY.md"), "points at docs/DEPLOY.md");
    ensure!(root().join("docs/DEPLOY.md").exists());
    Ok(())
}
