//! `whisperfleet memory show|forget --user ID [--platform P] [--namespace N] [--character
//! NAME]`: privacy. `show` lists what is stored about one user — memories with their
//! emotional states (vector memory), short-term history and cached answers (Redis),
//! relationships (PostgreSQL, or the embedded store); `forget` removes exactly that. A user
//! is (platform, namespace, user id), so both reach one identity and nobody else. The work
//! itself is `whisperfleet_worker::privacy`, shared with privacy requests that reach a
//! worker; this command only parses, connects and prints.

use anyhow::Context;
use clap::{Args, Subcommand};
use whisperfleet_adapters::connect;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::identity::Identity;
use whisperfleet_worker::privacy::{self, Ports, Selector};

#[derive(Subcommand)]
pub enum MemoryCommand {
    /// List everything stored about a user: memories (with emotional states), history,
    /// relationships, cached answers.
    Show(Who),
    /// Forget everything stored about a user: memories, history, relationships, cached
    /// answers. Nothing of anyone else, whatever the ids contain.
    Forget(Who),
}

/// Which user: (platform, namespace, user id), and optionally one character.
#[derive(Args)]
pub struct Who {
    /// The user id as the platform gives it.
    #[arg(long)]
    user: String,
    /// `discord`, `http`, `terminal` (or `legacy`: relationships from before platforms
    /// whose user id was not a Discord id). Default: `discord` when the id is numeric, as
    /// Discord ids are; required otherwise.
    #[arg(long)]
    platform: Option<String>,
    /// The HTTP API key's name the user came in with; empty (the default) for Discord, the
    /// terminal, and HTTP without keys.
    #[arg(long, default_value = "")]
    namespace: String,
    /// Only what concerns this character.
    #[arg(long)]
    character: Option<String>,
}

impl Who {
    fn selector(self) -> anyhow::Result<Selector> {
        if self.user.is_empty() {
            anyhow::bail!("--user must not be empty");
        }
        let platform = match self.platform {
            Some(p) if p.is_empty() => anyhow::bail!("--platform must not be empty"),
            Some(p) => p,
            None if self.user.bytes().all(|b| b.is_ascii_digit()) => "discord".to_string(),
            None => anyhow::bail!(
                "user id {:?} is not a Discord id: say which platform it is from \
                 (--platform http, terminal or legacy)",
                self.user
            ),
        };
        Ok(Selector {
            identity: Identity::new(platform, self.namespace, self.user),
            character: self.character,
        })
    }
}

pub async fn run(config: &Config, cmd: MemoryCommand) -> anyhow::Result<()> {
    let (show, who) = match cmd {
        MemoryCommand::Show(w) => (true, w),
        MemoryCommand::Forget(w) => (false, w),
    };
    let sel = who.selector()?;
    let memory = connect::memory(config).await?;
    let cache = connect::configured_cache(config, "whisperfleet-memory")?;
    // PostgreSQL, or the embedded store under the data directory.
    let store = crate::fleet::open_store(config).await?;
    let ports = Ports {
        memory: memory.memory.as_ref(),
        store: store.as_ref(),
        cache: cache.as_deref(),
    };
    if show {
        let stored = privacy::show(&ports, &sel)
            .await
            .context("reading what is stored")?;
        print_stored(&sel, &stored, cache.is_some());
    } else {
        let f = privacy::forget(&ports, &sel).await.context("forgetting")?;
        println!(
            "forgot {} memories, {} conversation histories, {} relationships and {} cached answers of {}",
            f.memories, f.histories, f.relationships, f.cached_answers, sel.identity
        );
    }
    Ok(())
}

/// Stored text is printed quoted (`{:?}`): it is user input, and must not drive the terminal.
fn print_stored(sel: &Selector, s: &privacy::Stored, has_cache: bool) {
    println!("{}", sel.identity);
    if let Some(c) = &sel.character {
        println!("character {c:?} only");
    }
    println!("memories ({}, newest first):", s.memories.len());
    for m in &s.memories {
        println!(
            "  {} {} {} [{} {:.2}] channel {:?}{}: {:?}",
            m.timestamp.format("%Y-%m-%d %H:%M:%S"),
            m.character,
            m.role,
            m.emotion,
            m.intensity,
            m.channel_id,
            if m.is_dm { " (DM)" } else { "" },
            m.text
        );
    }
    println!("relationships ({}):", s.relationships.len());
    for (c, r) in &s.relationships {
        println!(
            "  {c}: trust {:.3}, affection {:.3}, attunement {:.3}, {} interactions",
            r.trust, r.affection, r.attunement, r.interactions
        );
    }
    if !has_cache {
        println!("history and cached answers: no Redis configured (WHISPERFLEET_REDIS_URL)");
        return;
    }
    println!("histories ({}):", s.histories.len());
    for h in &s.histories {
        println!("  with {} ({} entries):", h.character, h.entries.len());
        for e in &h.entries {
            println!("    {:?}: {:?}", e.role, e.text);
        }
    }
    println!(
        "cached answers ({}): {}",
        s.cached_answers.len(),
        s.cached_answers.join(" ")
    );
}
