//! `whisperfleet memory forget --user ID [--character NAME]`: the privacy command. Removes
//! a user's long-term memories (vector memory), short-term history (Redis) and
//! relationships (PostgreSQL, or the embedded store) — with one character, or with all of them.

use anyhow::Context;
use clap::Subcommand;
use whisperfleet_adapters::connect;
use whisperfleet_shared::character::normalize_name;
use whisperfleet_shared::config::Config;

#[derive(Subcommand)]
pub enum MemoryCommand {
    /// Forget everything stored about a user.
    Forget {
        #[arg(long)]
        user: String,
        /// Only what concerns this character.
        #[arg(long)]
        character: Option<String>,
    },
}

pub async fn run(config: &Config, cmd: MemoryCommand) -> anyhow::Result<()> {
    let MemoryCommand::Forget { user, character } = cmd;
    let character = character.map(|c| normalize_name(&c));
    // Glob metacharacters in a user id must not widen what is deleted.
    if user.contains(['*', '?', '[', ']', '\\']) {
        anyhow::bail!("user ids with glob characters (* ? [ ] \\) cannot be forgotten by pattern");
    }
    let ports = connect::memory(config).await?;
    let memories = ports
        .memory
        .forget(&user, character.as_deref())
        .await
        .context("forgetting vector memories")?;
    let mut history = 0;
    if let Some(cache) = connect::configured_cache(config, "whisperfleet-memory")? {
        // History keys are hist:<platform>:<channel>:<user>:<character>.
        let pattern = format!("hist:*:*:{user}:{}", character.as_deref().unwrap_or("*"));
        history = cache
            .delete_matching(&pattern)
            .await
            .context("forgetting short-term history")?;
    }
    // PostgreSQL, or the embedded store under the data directory.
    let store = crate::fleet::open_store(config).await?;
    let relationships = store
        .forget_user(&user, character.as_deref())
        .await
        .context("forgetting relationships")?;
    println!(
        "forgot {memories} memories, {history} conversation histories and {relationships} relationships of user {user}"
    );
    Ok(())
}
