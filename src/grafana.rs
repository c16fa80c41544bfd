//! The Grafana provisioning files (`deploy/grafana/`) checked against the code: the
//! datasource, the dashboard's and the alert rules' Flux queries naming only measurements,
//! fields, tags and queues the fleet writes (names taken from the points the code builds).
//! Shared by `whisperfleet doctor` (on an operator's copy of the files) and the deploy tests
//! (on the repository's), so both check the same things.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Value, json};

/// A provisioning file that does not hold what Grafana or the fleet needs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProvisioningError(pub String);

type Result<T> = std::result::Result<T, ProvisioningError>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(ProvisioningError(format!($($arg)+)));
        }
    };
}

fn err(msg: impl Into<String>) -> ProvisioningError {
    ProvisioningError(msg.into())
}

/// Relative to the grafana directory.
pub const DASHBOARD: &str = "dashboards/whisperfleet.json";
pub const DATASOURCE: &str = "provisioning/datasources/influxdb.yml";
pub const DASHBOARDS_PROVIDER: &str = "provisioning/dashboards/dashboards.yml";
pub const ALERTING: &str = "provisioning/alerting/whisperfleet.yml";

/// A YAML document with its anchors and `<<` merge keys resolved, as Grafana and Compose
/// read it.
pub fn parse_yaml(text: &str) -> Result<Value> {
    let mut v: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| err(format!("not YAML: {e}")))?;
    v.apply_merge()
        .map_err(|e| err(format!("YAML merge keys: {e}")))?;
    serde_json::to_value(v).map_err(|e| err(e.to_string()))
}

/// Measurement → (fields, tags), from points built by the code that writes them.
pub type Written = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

/// What the fleet writes: the worker's `turn`/`cache`/… points, the gateway's `delivery`
/// point, the writer's `fleet_queue` and `metrics_writer` points, read back with the
/// line-protocol parser as InfluxDB reads them.
pub fn written() -> Result<Written> {
    use chrono::Utc;
    use whisperfleet_shared::lineproto;
    use whisperfleet_shared::ports::broker::QueueStats;
    use whisperfleet_shared::wire::{TurnReply, TurnRequest};

    let now = Utc::now();
    let conversation =
        json!({"platform": "http", "channel_id": "c", "user_id": "u", "is_dm": true});
    let req: TurnRequest = serde_json::from_value(json!({
        "v": 1, "turn_id": "018f0000-0000-7000-8000-000000000000", "conversation": conversation,
        "character": "Nora Halvorsen", "user_name": "u", "text": "hi", "received_at": now,
        "published_at": now, "reply_to": "gateway-1"
    }))
    .map_err(|e| err(e.to_string()))?;
    let reply: TurnReply = serde_json::from_value(json!({
        "v": 1, "turn_id": "018f0000-0000-7000-8000-000000000000", "conversation": conversation,
        "character": "Nora Halvorsen", "text": "hello", "outcome": "ok"
    }))
    .map_err(|e| err(e.to_string()))?;
    // Every stage the worker times becomes a `<stage>_ms` field of its `turn` point.
    let worker_timings = whisperfleet_worker::turn::WORKER_STAGES
        .iter()
        .map(|s| (s.to_string(), 1.0))
        .collect::<BTreeMap<_, _>>();
    let gateway_timings = whisperfleet_gateway::gateway::DELIVERY_STAGES
        .iter()
        .map(|s| (s.to_string(), 1.0))
        .collect::<BTreeMap<_, _>>();
    let stats = whisperfleet_metrics_writer::batch::WriterStats::default();
    let queue = QueueStats {
        queue: whisperfleet_shared::topology::TURNS_QUEUE.into(),
        ready: 1,
        consumers: 1,
    };
    let mut points = whisperfleet_worker::finish::turn_points(&req, &reply, &worker_timings);
    points.push(whisperfleet_gateway::gateway::delivery_point(
        &reply,
        &gateway_timings,
        now,
    ));
    points.push(whisperfleet_metrics_writer::sampler::queue_point(
        &queue,
        Some(1),
        now,
    ));
    points.push(whisperfleet_metrics_writer::sampler::health_point(
        &stats, 1, now,
    ));
    let body = lineproto::encode(&points);
    let mut out = Written::new();
    for line in influxdb_line_protocol::parse_lines(&body) {
        let line = line.map_err(|e| err(e.to_string()))?;
        let entry = out.entry(line.series.measurement.to_string()).or_default();
        entry
            .0
            .extend(line.field_set.iter().map(|(k, _)| k.to_string()));
        entry.1.extend(
            line.series
                .tag_set
                .iter()
                .flatten()
                .map(|(k, _)| k.to_string()),
        );
    }
    Ok(out)
}

/// Every `"…"` literal up to the closing bracket.
fn quoted_until(s: &str, close: char) -> Vec<String> {
    let body = &s[..s.find(close).unwrap_or(s.len())];
    body.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn first_quoted(s: &str) -> Option<String> {
    let s = s.trim_start().strip_prefix('"')?;
    Some(s[..s.find('"')?].to_string())
}

/// What a Flux query names: measurements, fields (with the measurement whose clause names
/// them: the nearest one before; `None` before any), and tags compared with a literal.
#[derive(Debug, Default)]
pub struct Names {
    pub measurements: BTreeSet<String>,
    pub fields: Vec<(Option<String>, String)>,
    pub tags: BTreeMap<String, BTreeSet<String>>,
}

pub fn flux_names(q: &str) -> Names {
    let mut n = Names::default();
    // (position, is_measurement, name), in query order.
    let mut named = Vec::new();
    for (i, _) in q.match_indices("r._measurement ==") {
        if let Some(m) = first_quoted(&q[i + "r._measurement ==".len()..]) {
            named.push((i, true, m));
        }
    }
    for (i, _) in q.match_indices("r._field ==") {
        if let Some(f) = first_quoted(&q[i + "r._field ==".len()..]) {
            named.push((i, false, f));
        }
    }
    for (i, _) in q.match_indices("contains(value: r._field, set: [") {
        let rest = &q[i + "contains(value: r._field, set: [".len()..];
        named.extend(quoted_until(rest, ']').into_iter().map(|f| (i, false, f)));
    }
    named.sort();
    let mut current = None;
    for (_, is_measurement, name) in named {
        if is_measurement {
            n.measurements.insert(name.clone());
            current = Some(name);
        } else {
            n.fields.push((current.clone(), name));
        }
    }
    // `r.<tag> == "value"` (tags are the non-underscore columns).
    for (i, _) in q.match_indices("r.") {
        let rest = &q[i + 2..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        if name.is_empty() || name.starts_with('_') {
            continue;
        }
        if let Some(v) = after.trim_start().strip_prefix("==") {
            n.tags
                .entry(name.to_string())
                .or_default()
                .extend(first_quoted(v));
        }
    }
    for (i, _) in q.match_indices("group(columns: [") {
        for c in quoted_until(&q[i + "group(columns: [".len()..], ']') {
            if !c.starts_with('_') {
                n.tags.entry(c).or_default();
            }
        }
    }
    n
}

/// (panel title, datasource uid, Flux query) of every query of a dashboard.
pub fn dashboard_queries(dash: &Value) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dash["panels"]
        .as_array()
        .ok_or_else(|| err("the dashboard has no panels"))?
        .iter()
        .collect();
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        if matches!(p["type"].as_str(), Some("row" | "text")) {
            continue;
        }
        let title = p["title"]
            .as_str()
            .ok_or_else(|| err("a panel has no title"))?
            .to_string();
        let targets = p["targets"]
            .as_array()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err(format!("panel {title:?} has no queries")))?;
        for t in targets {
            let uid = t["datasource"]["uid"]
                .as_str()
                .or(p["datasource"]["uid"].as_str())
                .ok_or_else(|| err(format!("panel {title:?}: no datasource")))?;
            let query = t["query"]
                .as_str()
                .ok_or_else(|| err(format!("panel {title:?}: no Flux query")))?;
            out.push((title.clone(), uid.to_string(), query.to_string()));
        }
    }
    Ok(out)
}

/// Checks that a Flux query names only what the code writes: measurements, their fields
/// (with the measurement whose clause names them), their tags, and queues and outcomes that
/// exist; returns what it names. `what` says whose query it is in errors.
pub fn check_query(what: &str, query: &str, written: &Written) -> Result<Names> {
    use whisperfleet_shared::topology;
    use whisperfleet_shared::wire::Outcome;
    let queues = topology::FLEET_QUEUES;
    let n = flux_names(query);
    ensure!(
        !n.measurements.is_empty() && !n.fields.is_empty(),
        "{what} must name a measurement and a field"
    );
    for m in &n.measurements {
        ensure!(
            written.contains_key(m),
            "{what}: nothing writes measurement {m:?} (written: {:?})",
            written.keys()
        );
    }
    for (of, f) in &n.fields {
        let candidates: Vec<&String> = match of {
            Some(m) => vec![m],
            None => n.measurements.iter().collect(),
        };
        ensure!(
            candidates.iter().any(|m| written[*m].0.contains(f)),
            "{what}: {candidates:?} write no field {f:?}"
        );
    }
    for (tag, values) in &n.tags {
        ensure!(
            n.measurements.iter().any(|m| written[m].1.contains(tag)),
            "{what}: {:?} have no tag {tag:?}",
            n.measurements
        );
        for v in values {
            let known = match tag.as_str() {
                "queue" => queues.contains(&v.as_str()),
                "outcome" => serde_json::from_value::<Outcome>(json!(v)).is_ok(),
                _ => true,
            };
            ensure!(known, "{what}: no {tag} is called {v:?}");
        }
    }
    Ok(n)
}

/// An alert rule's title and its datasource queries: (datasource uid, Flux).
pub type RuleQueries = (String, Vec<(String, String)>);

/// Each alert rule with its queries, once its condition and expressions were checked to
/// name refIds its data defines.
pub fn alert_rules(doc: &Value) -> Result<Vec<RuleQueries>> {
    let mut out = Vec::new();
    let groups = doc["groups"]
        .as_array()
        .ok_or_else(|| err("no alert groups"))?;
    for group in groups {
        let rules = group["rules"]
            .as_array()
            .ok_or_else(|| err("an alert group has no rules"))?;
        for rule in rules {
            let title = rule["title"]
                .as_str()
                .ok_or_else(|| err("an alert rule has no title"))?
                .to_string();
            ensure!(rule["uid"].is_string(), "rule {title:?} has no uid");
            let data = rule["data"]
                .as_array()
                .ok_or_else(|| err(format!("rule {title:?}: no data")))?;
            let refs: BTreeSet<&str> = data.iter().filter_map(|d| d["refId"].as_str()).collect();
            let condition = rule["condition"].as_str().unwrap_or_default();
            ensure!(
                refs.contains(condition),
                "rule {title:?}: condition {condition:?} is none of its refIds {refs:?}"
            );
            let mut queries = Vec::new();
            for d in data {
                let uid = d["datasourceUid"]
                    .as_str()
                    .ok_or_else(|| err(format!("rule {title:?}: no datasourceUid")))?;
                if uid == "__expr__" {
                    let input = d["model"]["expression"].as_str().unwrap_or_default();
                    ensure!(
                        refs.contains(input),
                        "rule {title:?}: expression reads {input:?}, which is none of {refs:?}"
                    );
                    continue;
                }
                let query = d["model"]["query"]
                    .as_str()
                    .ok_or_else(|| err(format!("rule {title:?}: no Flux query")))?;
                queries.push((uid.to_string(), query.to_string()));
            }
            ensure!(!queries.is_empty(), "rule {title:?} queries nothing");
            out.push((title, queries));
        }
    }
    Ok(out)
}

/// One provisioning file's verdict: what it holds, or what is wrong with it.
#[derive(Debug)]
pub struct FileCheck {
    /// Relative to the grafana directory.
    pub file: &'static str,
    pub result: Result<String>,
}

/// Every provisioning file under `dir` (the `deploy/grafana` directory): parsed, the
/// datasource an InfluxDB Flux one, every dashboard and alert query on that datasource's
/// bucket and naming only what the code writes.
pub fn check_dir(dir: &Path) -> Vec<FileCheck> {
    let read = |rel: &str| {
        std::fs::read_to_string(dir.join(rel))
            .map_err(|e| err(format!("cannot read {}: {e}", dir.join(rel).display())))
    };
    let mut out = Vec::new();
    let datasource = read(DATASOURCE)
        .and_then(|t| parse_yaml(&t))
        .and_then(|ds| {
            let d = &ds["datasources"][0];
            ensure!(
                d["type"] == "influxdb" && d["jsonData"]["version"] == "Flux",
                "the first datasource must be InfluxDB with Flux"
            );
            d["uid"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| err("the datasource has no uid"))
        });
    let uid = datasource.as_ref().ok().cloned();
    out.push(FileCheck {
        file: DATASOURCE,
        result: datasource.map(|uid| format!("InfluxDB (Flux) datasource {uid:?}")),
    });
    out.push(FileCheck {
        file: DASHBOARDS_PROVIDER,
        result: read(DASHBOARDS_PROVIDER)
            .and_then(|t| parse_yaml(&t))
            .and_then(|v| {
                let n = v["providers"].as_array().map_or(0, Vec::len);
                ensure!(n > 0, "no dashboard provider");
                Ok(format!("{n} dashboard provider(s)"))
            }),
    });
    let written = written();
    let queries_ok = |what: &str, q_uid: &str, query: &str| -> Result<()> {
        if let Some(uid) = &uid {
            ensure!(
                q_uid == uid,
                "{what} uses datasource {q_uid:?}, not the provisioned {uid:?}"
            );
        }
        ensure!(
            query.contains("from(bucket: v.defaultBucket)"),
            "{what} does not read the provisioned bucket (from(bucket: v.defaultBucket))"
        );
        let written = written.as_ref().map_err(|e| err(e.to_string()))?;
        check_query(what, query, written).map(|_| ())
    };
    out.push(FileCheck {
        file: DASHBOARD,
        result: read(DASHBOARD).and_then(|t| {
            let dash: Value =
                serde_json::from_str(&t).map_err(|e| err(format!("not JSON: {e}")))?;
            let queries = dashboard_queries(&dash)?;
            for (title, q_uid, query) in &queries {
                queries_ok(&format!("panel {title:?}"), q_uid, query)?;
            }
            Ok(format!(
                "{} queries, each naming what the fleet writes",
                queries.len()
            ))
        }),
    });
    out.push(FileCheck {
        file: ALERTING,
        result: read(ALERTING).and_then(|t| parse_yaml(&t)).and_then(|doc| {
            ensure!(doc["apiVersion"] == 1, "apiVersion must be 1");
            let rules = alert_rules(&doc)?;
            for (title, queries) in &rules {
                for (q_uid, query) in queries {
                    queries_ok(&format!("rule {title:?}"), q_uid, query)?;
                }
            }
            Ok(format!(
                "{} alert rules, each naming what the fleet writes",
                rules.len()
            ))
        }),
    });
    out
}
