//! `whisperfleet characters import FILE|DIR… / import --lorebook FILE --character NAME /
//! export NAME / list / show NAME`: characters in the project's own format (YAML or JSON, the
//! shape of `Character`; see README) or community cards (V1/V2/V3 JSON, PNG, CHARX:
//! `whisperfleet_shared::cards`) into PostgreSQL, or into the embedded SQLite store under the
//! data directory when no database is configured. Each file is its own transaction: a bad
//! file is reported on one line naming it and what is wrong, and the others still import.
//! After an import the new version is made current for every worker (Redis version key) and
//! announced on `fleet.control`, so the next turn uses it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use whisperfleet_adapters::connect;
use whisperfleet_shared::cards::{self, Card, Imported, Lorebook, Spec};
use whisperfleet_shared::character::{Character, normalize_name};
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::broker::Message;
use whisperfleet_shared::ports::characters::CharacterStore;
use whisperfleet_shared::topology;
use whisperfleet_worker::consumer::ControlMessage;

#[derive(Subcommand)]
pub enum CharactersCommand {
    /// Create or update characters from files or directories of them: the project's YAML/JSON,
    /// or character cards (V1/V2/V3 JSON, PNG/APNG, CHARX). With --lorebook, attach a
    /// lorebook (lorebook_v3 or World Info JSON) to an existing character instead.
    Import {
        #[arg(required_unless_present = "lorebook")]
        paths: Vec<PathBuf>,
        #[arg(long, requires = "character", conflicts_with = "paths")]
        lorebook: Option<PathBuf>,
        #[arg(long, requires = "lorebook")]
        character: Option<String>,
    },
    /// A character as a card: JSON on stdout, or a PNG carrying both `ccv3` and `chara`.
    Export {
        name: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::V3)]
        format: ExportFormat,
        #[arg(long)]
        png: Option<PathBuf>,
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

/// Which card spec `export` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    V3,
    V2,
}

pub async fn run(config: &Config, cmd: CharactersCommand) -> anyhow::Result<()> {
    let store = crate::fleet::open_store(config).await?;
    match cmd {
        CharactersCommand::Import {
            lorebook: Some(file),
            character: Some(name),
            ..
        } => attach_lorebook(config, store.as_ref(), &file, &name).await,
        CharactersCommand::Import { paths, .. } => import(config, store.as_ref(), &paths).await,
        CharactersCommand::Export { name, format, png } => {
            let c = load(store.as_ref(), &name).await?;
            let spec = match format {
                ExportFormat::V3 => Spec::V3,
                ExportFormat::V2 => Spec::V2,
            };
            match png {
                Some(path) => {
                    let bytes = cards::png::write(&[
                        ("chara", &export(&c, Spec::V2)?),
                        ("ccv3", &export(&c, Spec::V3)?),
                    ]);
                    std::fs::write(&path, bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("exported {} to {}", c.name, path.display());
                }
                None => println!("{}", export(&c, spec)?),
            }
            Ok(())
        }
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
            let c = load(store.as_ref(), &name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                // Where it came from first, as YAML comments so the output stays YAML.
                println!("# source: {}", source_of(&c));
                println!("# lorebook entries: {}", c.lore_entry_count());
                if let Some(card) = &c.card {
                    for a in &card.data.assets {
                        println!("# asset: {} {} ({}) {}", a.kind, a.name, a.ext, a.uri);
                    }
                }
                print!("{}", serde_norway::to_string(&c)?);
            }
            Ok(())
        }
    }
}

async fn load(store: &dyn CharacterStore, name: &str) -> anyhow::Result<Character> {
    store.load(&normalize_name(name)).await?.with_context(|| {
        format!("no character called {name:?} (see `whisperfleet characters list`)")
    })
}

/// `png card chara_card_v3 3.0`, or `whisperfleet format` for the project's own.
fn source_of(c: &Character) -> String {
    match &c.card {
        Some(card) => format!(
            "{} card {} {}",
            card.container.as_str(),
            card.spec.as_str(),
            card.spec_version
        )
        .trim_end()
        .to_string(),
        None => "whisperfleet format".into(),
    }
}

/// The character as card JSON of `spec` (a character of the project's own format becomes a
/// minimal card of its name and description).
fn export(c: &Character, spec: Spec) -> anyhow::Result<String> {
    let card = match &c.card {
        Some(card) => card.clone(),
        None => Card::from_json(
            &cards::card_from_model(&c.name, &c.description),
            cards::Container::Json,
        )?,
    };
    Ok(card.export(spec)?)
}

/// Reads one character file: a community card (PNG, CHARX, card JSON), or the project's own
/// format (JSON when it looks like JSON, YAML otherwise: [`Character::from_file_text`]).
/// Errors are one line naming the file and what is wrong.
pub fn read_character(path: &Path) -> anyhow::Result<(Character, Vec<String>)> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot read", path.display()))?
        .len();
    if size > cards::MAX_FILE_BYTES as u64 {
        bail!(
            "{}: file is {size} bytes, over the limit of {} bytes",
            path.display(),
            cards::MAX_FILE_BYTES
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", path.display());
    match Card::from_bytes(&bytes).map_err(|e| fail(&e))? {
        Imported::Card(card) => {
            let warnings = card.warnings.clone();
            let c = Character::from_card(*card).map_err(|e| fail(&e))?;
            Ok((c, warnings))
        }
        Imported::OwnFormat => {
            let text = String::from_utf8(bytes).map_err(|e| fail(&e))?;
            Character::from_file_text(&text)
                .map(|c| (c, Vec::new()))
                .map_err(|e| fail(&e))
        }
    }
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
                        Some("yaml" | "yml" | "json" | "png" | "apng" | "charx")
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
    let files = expand(paths)?;
    let announce = Announcer::connect(config).await?;
    let mut failed = 0usize;
    // One transaction per file: a bad file is reported and skipped, the others import.
    for file in &files {
        match import_one(store, &announce, file).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                failed += 1;
                eprintln!("{e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} files not imported", files.len());
    }
    Ok(())
}

async fn import_one(
    store: &dyn CharacterStore,
    announce: &Announcer,
    file: &Path,
) -> anyhow::Result<String> {
    let (mut c, warnings) = read_character(file)?;
    for w in &warnings {
        eprintln!("{}: warning: {w}", file.display());
    }
    // Lorebooks attached to the character stay attached when it is imported again.
    if let Some(existing) = store.load(&c.normalized_name).await? {
        c.lorebooks = existing.lorebooks;
    }
    let version = announce.store(store, &c).await?;
    Ok(format!(
        "imported {} (version {version}) from {}: {}, {} lorebook entries",
        c.name,
        file.display(),
        source_of(&c),
        c.lore_entry_count()
    ))
}

async fn attach_lorebook(
    config: &Config,
    store: &dyn CharacterStore,
    file: &Path,
    name: &str,
) -> anyhow::Result<()> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("{}: cannot read", file.display()))?
        .len();
    if size > cards::MAX_JSON_BYTES as u64 {
        bail!(
            "{}: lorebook is {size} bytes, over the limit of {} bytes",
            file.display(),
            cards::MAX_JSON_BYTES
        );
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    let book =
        Lorebook::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let mut c = load(store, name).await?;
    let entries = book.entries.len();
    c.lorebooks.push(book);
    let announce = Announcer::connect(config).await?;
    let version = announce.store(store, &c).await?;
    println!(
        "attached {} ({entries} entries) to {} (version {version}; {} lorebook entries in all)",
        file.display(),
        c.name,
        c.lore_entry_count()
    );
    Ok(())
}

/// Stores characters and makes each new version current for every worker: the Redis version
/// key, and a `fleet.control` message for live workers.
struct Announcer {
    cache: Option<std::sync::Arc<dyn whisperfleet_shared::ports::cache::Cache>>,
    broker: Option<std::sync::Arc<dyn whisperfleet_shared::ports::broker::Broker>>,
}

impl Announcer {
    async fn connect(config: &Config) -> anyhow::Result<Self> {
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
        Ok(Self { cache, broker })
    }

    async fn store(&self, store: &dyn CharacterStore, c: &Character) -> anyhow::Result<i64> {
        let version = store
            .upsert(c)
            .await
            .with_context(|| format!("storing {}", c.name))?;
        let name = normalize_name(&c.name);
        if let Some(cache) = &self.cache {
            whisperfleet_worker::cdl::publish_version(cache.as_ref(), &name, version)
                .await
                .with_context(|| {
                    format!("making version {version} of {} current in Redis", c.name)
                })?;
        }
        if let Some(b) = &self.broker {
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
        Ok(version)
    }
}
