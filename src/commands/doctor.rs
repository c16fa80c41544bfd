//! `whisperfleet doctor`: checks every configured backend with the configuration the
//! services use (`whisperfleet_adapters::probe`) and the Grafana provisioning files
//! (`whisperfleet::grafana`), prints one line per check in plain words with the variable or
//! command that fixes what is wrong, and says through its exit status whether anything is.

use std::path::PathBuf;

use whisperfleet::grafana;
use whisperfleet_adapters::probe::{self, Check, Status};
use whisperfleet_shared::config::Config;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Print one JSON object (`{"ok", "checks": [...]}`) instead of lines.
    #[arg(long)]
    json: bool,
    /// The Grafana directory to check (its `dashboards/` and `provisioning/`). Default:
    /// `deploy/grafana` when it exists here.
    #[arg(long, value_name = "DIR")]
    grafana: Option<PathBuf>,
}

/// Runs every check and prints them; `Ok(false)` when something is wrong.
pub async fn run(config: &Config, args: DoctorArgs) -> anyhow::Result<bool> {
    let mut checks = probe::all(config).await;
    checks.extend(grafana_checks(args.grafana));
    let ok = !checks.iter().any(|c| c.status == Status::Fail);
    if args.json {
        println!("{}", serde_json::json!({ "ok": ok, "checks": checks }));
    } else {
        for c in &checks {
            println!("{}", line(c));
        }
        let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
        let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
        let passed = checks.iter().filter(|c| c.status == Status::Ok).count();
        println!(
            "{}",
            match (failed, warned) {
                (0, 0) if passed == 0 => "nothing checked: no backend is configured".to_string(),
                (0, 0) => "all good".to_string(),
                (0, w) => format!("no failures, {w} warning(s)"),
                (f, w) => format!("{f} problem(s), {w} warning(s)"),
            }
        );
    }
    Ok(ok)
}

/// `FAIL rabbitmq  reachable: … → fix: …`
fn line(c: &Check) -> String {
    let tag = match c.status {
        Status::Ok => "ok  ",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Skip => "skip",
    };
    let mut s = format!("{tag} {:<9} {}: {}", c.backend, c.check, c.message);
    if let Some(fix) = &c.fix {
        s.push_str(" → fix: ");
        s.push_str(fix);
    }
    s
}

fn grafana_checks(dir: Option<PathBuf>) -> Vec<Check> {
    let (dir, given) = match dir {
        Some(d) => (d, true),
        None => (PathBuf::from("deploy/grafana"), false),
    };
    if !dir.is_dir() {
        let msg = format!("no Grafana directory at {}", dir.display());
        return vec![if given {
            Check::fail(
                "grafana",
                "provisioning",
                msg,
                "pass --grafana with the directory holding dashboards/ and provisioning/",
            )
        } else {
            Check::skip(
                "grafana",
                "provisioning",
                format!("{msg} (run from the repository, or pass --grafana DIR)"),
            )
        }];
    }
    grafana::check_dir(&dir)
        .into_iter()
        .map(|f| match f.result {
            Ok(what) => Check::ok("grafana", f.file, what),
            Err(e) => Check::fail(
                "grafana",
                f.file,
                e.to_string(),
                format!(
                    "edit {} (names must be what the fleet writes: see the `turn`, `cache`, \
                     `delivery`, `fleet_queue` and `metrics_writer` points in README.md)",
                    dir.join(f.file).display()
                ),
            ),
        })
        .collect()
}
