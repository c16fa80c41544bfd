//! The embedded metrics sink: what `whisperfleet up`/`chat` write metric events to when no
//! InfluxDB is configured. Lines are appended, exactly as InfluxDB would have received them,
//! to a line-protocol file under the data directory (rotated by size, like Telegraf's
//! `outputs.file`), so they can be replayed into any InfluxDB later
//! (`influx write --file metrics.lp`), and every `<stage>_ms` field of the `turn` and
//! `delivery` points feeds an in-memory [`MetricsSummary`] that `/stats` prints.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use whisperfleet_shared::ports::{MetricsSink, SinkError};
use whisperfleet_shared::wire::Stage;

/// Samples kept per stage: enough for stable percentiles, bounded for a long-running `up`.
const KEEP_SAMPLES: usize = 10_000;

/// Percentiles of one stage over the samples seen so far.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageStats {
    pub stage: String,
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Stage timings by name (`llm`, `end_to_end`, …), most recent samples kept.
#[derive(Debug, Default)]
pub struct MetricsSummary {
    stages: Mutex<BTreeMap<String, Samples>>,
}

#[derive(Debug, Default)]
struct Samples {
    count: u64,
    recent: VecDeque<f64>,
}

impl MetricsSummary {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn record(&self, stage: &str, ms: f64) {
        if !ms.is_finite() {
            return;
        }
        let mut stages = self.stages.lock().expect("summary lock");
        let s = stages.entry(stage.to_string()).or_default();
        s.count += 1;
        if s.recent.len() == KEEP_SAMPLES {
            s.recent.pop_front();
        }
        s.recent.push_back(ms);
    }

    /// Records every `<stage>_ms` field of `turn` and `delivery` lines (the pipeline's and
    /// the gateway's stages), parsed with the same line-protocol parser the metrics writer
    /// validates with; other measurements and unparsable lines are ignored here.
    pub fn record_line(&self, line: &str) {
        use influxdb_line_protocol::FieldValue;
        for parsed in influxdb_line_protocol::parse_lines(line).flatten() {
            let measurement = parsed.series.measurement.as_str();
            if measurement != "turn" && measurement != "delivery" {
                continue;
            }
            for (key, value) in &parsed.field_set {
                // `llm_ms` is on both points of a turn: count it once, from the worker's.
                if measurement == "delivery"
                    && key.as_str().strip_suffix("_ms") == Some(Stage::Llm.as_str())
                {
                    continue;
                }
                let ms = match value {
                    FieldValue::F64(v) => *v,
                    FieldValue::I64(v) => *v as f64,
                    FieldValue::U64(v) => *v as f64,
                    FieldValue::String(_) | FieldValue::Boolean(_) => continue,
                };
                if let Some(stage) = key.as_str().strip_suffix("_ms") {
                    self.record(stage, ms);
                }
            }
        }
    }

    /// Every stage's percentiles, in pipeline order where known, then alphabetically.
    pub fn snapshot(&self) -> Vec<StageStats> {
        let stages = self.stages.lock().expect("summary lock");
        let mut out: Vec<StageStats> = stages
            .iter()
            .filter(|(_, s)| !s.recent.is_empty())
            .map(|(name, s)| {
                let mut v: Vec<f64> = s.recent.iter().copied().collect();
                v.sort_by(f64::total_cmp);
                StageStats {
                    stage: name.clone(),
                    count: s.count,
                    p50: percentile(&v, 0.50),
                    p95: percentile(&v, 0.95),
                    p99: percentile(&v, 0.99),
                    max: *v.last().unwrap_or(&0.0),
                }
            })
            .collect();
        out.sort_by_key(|s| (stage_rank(&s.stage), s.stage.clone()));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.stages.lock().expect("summary lock").is_empty()
    }
}

/// Pipeline order ([`Stage::ALL`]), unknown stages last, so tables read top to bottom.
pub fn stage_rank(stage: &str) -> usize {
    Stage::parse(stage).map_or(Stage::ALL.len(), |s| s as usize)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Appends line protocol to a file and feeds a [`MetricsSummary`].
pub struct FileSink {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    max_bytes: u64,
    summary: Arc<MetricsSummary>,
    requests: AtomicU64,
}

impl FileSink {
    /// Rotation size: the file moves to `<name>.1` (replacing an older one) past this.
    pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

    pub fn open(path: &Path, summary: Arc<MetricsSummary>) -> std::io::Result<Self> {
        Self::open_with_limit(path, summary, Self::DEFAULT_MAX_BYTES)
    }

    pub fn open_with_limit(
        path: &Path,
        summary: Arc<MetricsSummary>,
        max_bytes: u64,
    ) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(append(path)?),
            max_bytes,
            summary,
            requests: AtomicU64::new(0),
        })
    }

    pub fn summary(&self) -> &Arc<MetricsSummary> {
        &self.summary
    }

    /// Batches written so far (the writer's health point reports it, as for InfluxDB).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_blocking(&self, lines: &[&str]) -> std::io::Result<()> {
        let mut body = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            body.push_str(l);
            body.push('\n');
        }
        let mut file = self.file.lock().expect("metrics file lock");
        if file.metadata()?.len() + body.len() as u64 > self.max_bytes {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, rotated)?;
            *file = append(&self.path)?;
        }
        file.write_all(body.as_bytes())?;
        file.flush()
    }
}

fn append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

#[async_trait]
impl MetricsSink for FileSink {
    async fn write(&self, lines: &[&str]) -> Result<(), SinkError> {
        // A small append to a local file: not worth a blocking-pool hop per batch.
        self.write_blocking(lines)
            .map_err(|e| SinkError::Retryable {
                reason: format!("writing {}: {e}", self.path.display()),
                retry_after_s: None,
            })?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        for l in lines {
            self.summary.record_line(l);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("line-protocol file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_with_escapes_and_strings() {
        let s = MetricsSummary::new();
        s.record_line(
            r#"turn,character=old\ wick,platform=http a_ms=1.5,s="x, y=z",n=3i,b_ms=2i 17"#,
        );
        // Escaped tags and a quoted string holding `,` and `=` do not derail the fields.
        let snap = s.snapshot();
        let got: Vec<(&str, f64)> = snap.iter().map(|x| (x.stage.as_str(), x.p50)).collect();
        assert_eq!(got, [("a", 1.5), ("b", 2.0)]);
        s.record_line("no_fields_at_all");
        assert_eq!(s.snapshot().len(), 2, "an unparsable line records nothing");
    }

    #[test]
    fn summary_counts_stages_of_turn_and_delivery_points() {
        let s = MetricsSummary::new();
        for i in 1..=100 {
            s.record_line(&format!("turn,character=x llm_ms={i},cdl_queries=0i 1"));
            s.record_line(&format!(
                "delivery,platform=t end_to_end_ms={},llm_ms=9 1",
                i * 2
            ));
        }
        s.record_line("emotion,character=x joy=0.5 1");
        let snap = s.snapshot();
        let names: Vec<_> = snap.iter().map(|x| x.stage.as_str()).collect();
        assert_eq!(names, ["llm", "end_to_end"]);
        let llm = &snap[0];
        assert_eq!(
            (llm.count, llm.p50, llm.p99, llm.max),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(snap[1].p95, 190.0);
    }

    #[tokio::test]
    async fn file_sink_appends_rotates_and_summarizes() {
        let dir = std::env::temp_dir().join(format!("wf-metrics-{}", uuid::Uuid::new_v4()));
        let path = dir.join("metrics.lp");
        let sink = FileSink::open_with_limit(&path, MetricsSummary::new(), 100).unwrap();
        sink.write(&["turn llm_ms=5 1", "turn llm_ms=7 2"])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "turn llm_ms=5 1\nturn llm_ms=7 2\n"
        );
        // Past 100 bytes the old file is kept as metrics.lp.1 and a new one started.
        let long = format!("turn llm_ms=1,pad=\"{}\" 3", "x".repeat(90));
        sink.write(&[&long]).await.unwrap();
        assert!(dir.join("metrics.lp.1").exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{long}\n"));
        assert_eq!(sink.requests(), 2);
        assert_eq!(sink.summary().snapshot()[0].count, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
