//! `whisperfleet characters import FILE|DIR… / list / show NAME`: the project's character
//! format (YAML or JSON, the shape of `Character`; see README) into PostgreSQL, or into the
//! embedded SQLite store under the data directory when no database is configured. After an
//! import the new version is made current for every worker (Redis version key) and announced
//! on `fleet.control`, so the next turn uses it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use whisperfleet_adapters::connect;
use whisperfleet_shared::character::{Character, normalize_name};
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::broker::Message;
use whisperfleet_shared::ports::characters::CharacterStore;
use whisperfleet_shared::topology;
use whisperfleet_worker::consumer::ControlMessage;

#[derive(Subcommand)]
pub enum CharactersCommand {
    /// Create or update characters from YAML/JSON files or directories of them.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// One line per character.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A character as stored (YAML, or JSON with --json).
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, cmd: CharactersCommand) -> anyhow::Result<()> {
    let store = crate::fleet::open_store(config).await?;
    match cmd {
        CharactersCommand::Import { paths } => import(config, store.as_ref(), &paths).await,
        CharactersCommand::List { json } => {
            let list = store.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<24} {:<14} {:>7}  OCCUPATION",
                    "NAME", "ARCHETYPE", "VERSION"
                );
                for c in list {
                    println!(
                        "{:<24} {:<14} {:>7}  {}",
                        c.name,
                        c.archetype.as_str(),
                        c.version,
                        c.occupation
                    );
                }
            }
            Ok(())
        }
        CharactersCommand::Show { name, json } => {
            let Some(c) = store.load(&normalize_name(&name)).await? else {
                bail!("no character called {name:?} (see `whisperfleet characters list`)");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print!("{}", serde_norway::to_string(&c)?);
            }
            Ok(())
        }
    }
}

/// Reads one character file: JSON when it looks like JSON, YAML otherwise
/// ([`Character::from_file_text`]).
pub fn read_character(path: &Path) -> anyhow::Result<Character> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Character::from_file_text(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    matches!(
                        f.extension().and_then(|x| x.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

async fn import(
    config: &Config,
    store: &dyn CharacterStore,
    paths: &[PathBuf],
) -> anyhow::Result<()> {
    // Read and validate everything first: a bad file imports nothing.
    let files = expand(paths)?;
    let characters = files
        .iter()
        .map(|f| read_character(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache = connect::configured_cache(config, "whisperfleet-characters")?;
    let broker = match connect::configured_broker(config, "whisperfleet-characters").await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot announce changes on fleet.control");
            None
        }
    };
    if let Some(b) = &broker {
        b.ensure_topology()
            .await
            .context("declaring the fleet topology")?;
    }
    for c in characters {
        let version = store
            .upsert(&c)
            .await
            .with_context(|| format!("storing {}", c.name))?;
        let name = normalize_name(&c.name);
        if let Some(cache) = &cache {
            whisperfleet_worker::cdl::publish_version(cache.as_ref(), &name, version)
                .await
                .with_context(|| {
                    format!("making version {version} of {} current in Redis", c.name)
                })?;
        }
        if let Some(b) = &broker {
            let body = serde_json::to_vec(&ControlMessage::CharacterChanged {
                name: name.clone(),
                version,
            })?;
            let mut msg = Message::json(topology::CONTROL_EXCHANGE, "", body);
            msg.persistent = false;
            // No worker listening is fine: the control queue is only for live workers.
            if let Err(e) = b.publish(msg).await {
                tracing::debug!(error = %e, "control message not delivered");
            }
        }
        println!("imported {} (version {version})", c.name);
    }
    Ok(())
}
