//! The terminal adapter behind `whisperfleet chat`: each line typed (or piped) is one turn
//! through the whole fleet, like a Discord message, and the reply comes back with a timing
//! line like the Discord footer. Commands: `/characters`, `/switch NAME`, `/stats` (stage
//! percentiles so far), `/help`, `/quit`.
//!
//! Interactive (a TTY): a banner, a prompt, replies and timing lines on stdout. Piped: one
//! reply line on stdout per input line (errors too, as `error: …`, so line N answers line
//! N), timing lines on stderr, so scripts can read stdout alone. Interactive replies are
//! streamed: printed as the character writes them, the reply's rest and timing at the end.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use whisperfleet_adapters::metrics::file::{MetricsSummary, StageStats};
use whisperfleet_shared::ports::characters::CharacterStore;
use whisperfleet_shared::wire::{Conversation, Outcome};

use crate::gateway::{GatewayCore, TurnInput};

pub struct ChatOptions {
    pub character: String,
    pub user_id: String,
    pub user_name: String,
    /// Prompt, banner and timing lines on stdout (a TTY) or the scripting format.
    pub interactive: bool,
    /// Shown in the banner: what the fleet runs on.
    pub banner: Option<String>,
}

pub struct Chat {
    core: Arc<GatewayCore>,
    /// For `/characters` and `/switch`; the gateway itself never reads character data.
    characters: Option<Arc<dyn CharacterStore>>,
    /// This session's turns, every stage up to delivery, exactly as each reply carried them.
    session: Arc<MetricsSummary>,
    /// The embedded metrics writer's summary, for the stages after the reply
    /// (`reply_publish`, `memory_store`) that only the metric events carry.
    fleet: Option<Arc<MetricsSummary>>,
}

/// What one line asks for.
#[derive(Debug, PartialEq)]
enum Line<'a> {
    Empty,
    Turn(&'a str),
    Quit,
    Help,
    Stats,
    Characters,
    Switch(&'a str),
    Unknown(&'a str),
}

fn parse(line: &str) -> Line<'_> {
    let t = line.trim();
    if t.is_empty() {
        return Line::Empty;
    }
    // `//text` sends a message that starts with a slash.
    if let Some(text) = t.strip_prefix("//") {
        return Line::Turn(text);
    }
    let Some(cmd) = t.strip_prefix('/') else {
        return Line::Turn(t);
    };
    let (name, arg) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
    match name {
        "quit" | "exit" | "q" => Line::Quit,
        "help" | "?" => Line::Help,
        "stats" => Line::Stats,
        "characters" | "chars" => Line::Characters,
        "switch" => Line::Switch(arg.trim()),
        _ => Line::Unknown(name),
    }
}

const HELP: &str = "commands: /characters  /switch NAME  /stats  /help  /quit   (//text sends a line starting with /)";

/// The timing line of one turn: the Discord footer's `timing` form, so both read alike.
pub fn timing_line(timings: &std::collections::BTreeMap<String, f64>) -> String {
    let footer =
        crate::discord::text::render_footer(crate::discord::text::FooterMode::Timing, timings)
            .unwrap_or_default();
    footer.trim_start_matches("-# ").to_string()
}

/// `/stats`: one row per stage.
pub fn stats_table(stats: &[StageStats]) -> String {
    if stats.is_empty() {
        return "no turns yet".into();
    }
    let mut out = format!(
        "{:<14} {:>6} {:>9} {:>9} {:>9} {:>9}\n",
        "stage", "turns", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for s in stats {
        out.push_str(&format!(
            "{:<14} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
            s.stage, s.count, s.p50, s.p95, s.p99, s.max
        ));
    }
    out.pop();
    out
}

impl Chat {
    pub fn new(
        core: Arc<GatewayCore>,
        characters: Option<Arc<dyn CharacterStore>>,
        fleet: Option<Arc<MetricsSummary>>,
    ) -> Self {
        Self {
            core,
            characters,
            session: MetricsSummary::new(),
            fleet,
        }
    }

    /// Stage percentiles: this session's, plus the post-reply stages from the fleet's
    /// metric events when the embedded writer runs in this process.
    pub fn stats(&self) -> Vec<StageStats> {
        let mut rows = self.session.snapshot();
        if let Some(fleet) = &self.fleet {
            for s in fleet.snapshot() {
                if !rows.iter().any(|r| r.stage == s.stage) {
                    rows.push(s);
                }
            }
            rows.sort_by_key(|s| whisperfleet_adapters::metrics::file::stage_rank(&s.stage));
        }
        rows
    }

    /// Runs until `/quit`, end of input or shutdown.
    pub async fn run<R, W, E>(
        &self,
        mut opts: ChatOptions,
        input: R,
        mut out: W,
        mut err: E,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let mut lines = input.lines();
        if opts.interactive {
            let mut banner = format!("Talking to {}.", opts.character);
            if let Some(b) = &opts.banner {
                banner = format!("{b}\n{banner}");
            }
            out.write_all(format!("{banner}\n{HELP}\n").as_bytes())
                .await?;
        }
        loop {
            if opts.interactive {
                out.write_all(b"you> ").await?;
                out.flush().await?;
            }
            let line = tokio::select! {
                _ = shutdown.cancelled() => break,
                l = lines.next_line() => match l? {
                    Some(l) => l,
                    None => break,
                },
            };
            let say = match parse(&line) {
                Line::Empty => continue,
                Line::Quit => break,
                Line::Help => HELP.to_string(),
                Line::Stats => stats_table(&self.stats()),
                Line::Characters => self.list_characters(&opts.character).await,
                Line::Switch(name) => match self.switch(name).await {
                    Ok(name) => {
                        opts.character = name;
                        format!("now talking to {}", opts.character)
                    }
                    Err(msg) => msg,
                },
                Line::Unknown(name) => format!("unknown command /{name}; {HELP}"),
                Line::Turn(text) => {
                    let (reply, timing) = self.turn(&opts, text, &mut out).await?;
                    out.write_all(reply.as_bytes()).await?;
                    out.write_all(b"\n").await?;
                    if let Some(t) = timing {
                        let t = format!("  {t}\n");
                        if opts.interactive {
                            out.write_all(t.as_bytes()).await?;
                        } else {
                            err.write_all(t.as_bytes()).await?;
                            err.flush().await?;
                        }
                    }
                    out.flush().await?;
                    continue;
                }
            };
            out.write_all(say.as_bytes()).await?;
            out.write_all(b"\n").await?;
            out.flush().await?;
        }
        out.flush().await?;
        Ok(())
    }

    /// One turn; returns what is left to print of the reply and the timing line.
    /// Interactive, the reply is printed to `out` as it is written (`Name> ` and the first
    /// words as soon as they exist); the returned text is then only its rest.
    async fn turn<W: AsyncWrite + Unpin>(
        &self,
        opts: &ChatOptions,
        text: &str,
        out: &mut W,
    ) -> std::io::Result<(String, Option<String>)> {
        let input = TurnInput {
            conversation: Conversation {
                platform: "terminal".into(),
                namespace: String::new(),
                channel_id: format!("terminal:{}", opts.user_id),
                user_id: opts.user_id.clone(),
                guild_id: None,
                is_dm: true,
            },
            character: opts.character.clone(),
            user_name: opts.user_name.clone(),
            text: text.to_string(),
            platform_sent_at: None,
            platform_message_id: None,
            received: Instant::now(),
            received_at: Utc::now(),
        };
        let mut shown = String::new();
        let result = if opts.interactive {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let submit = self.core.submit_streaming(input, tx);
            tokio::pin!(submit);
            let mut first_visible = None;
            let result = loop {
                tokio::select! {
                    biased;
                    Some(piece) = rx.recv() => {
                        if shown.is_empty() {
                            out.write_all(format!("{}> ", opts.character).as_bytes()).await?;
                        }
                        out.write_all(piece.as_bytes()).await?;
                        out.flush().await?;
                        first_visible.get_or_insert_with(Instant::now);
                        shown.push_str(&piece);
                    }
                    r = &mut submit => break r,
                }
            };
            result.map(|mut p| {
                p.first_visible = first_visible;
                p
            })
        } else {
            self.core.submit(input).await
        };
        let pending = match result {
            Ok(p) => p,
            Err(e) if shown.is_empty() => return Ok((format!("error: {e}"), None)),
            Err(e) => return Ok((format!("\nerror: {e}"), None)),
        };
        let reply = &pending.reply;
        let text = match reply.outcome {
            Outcome::Rejected if reply.reason.as_deref() == Some("unknown_character") => {
                format!(
                    "error: there is no character called {:?} (/characters lists them)",
                    opts.character
                )
            }
            // The rest of what was printed as it came.
            _ if !shown.is_empty() && reply.text.starts_with(&shown) => {
                reply.text[shown.len()..].to_string()
            }
            // The reply is not what was shown (a redelivered turn): say it again, whole.
            _ if !shown.is_empty() => format!("\n{}> {}", reply.character, reply.text),
            _ if opts.interactive => format!("{}> {}", reply.character, reply.text),
            // One line per turn for scripts.
            _ => reply.text.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        let timings = self.core.complete(&pending);
        self.core.publish_delivery_metrics(&pending, &timings);
        for (stage, ms) in &timings {
            self.session.record(stage, *ms);
        }
        Ok((text, Some(timing_line(&timings))))
    }

    async fn list_characters(&self, current: &str) -> String {
        let Some(store) = &self.characters else {
            return "this gateway has no character directory".into();
        };
        match store.list().await {
            Ok(list) if list.is_empty() => "no characters yet".into(),
            Ok(list) => list
                .iter()
                .map(|c| {
                    let mark = if c.name.eq_ignore_ascii_case(current) {
                        "*"
                    } else {
                        " "
                    };
                    format!("{mark} {}  {}", c.name, c.occupation)
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("error: cannot list characters: {e}"),
        }
    }

    async fn switch(&self, name: &str) -> Result<String, String> {
        if name.is_empty() {
            return Err("usage: /switch NAME".into());
        }
        let Some(store) = &self.characters else {
            // The worker will say whether it exists.
            return Ok(name.to_string());
        };
        let list = store
            .list()
            .await
            .map_err(|e| format!("error: cannot list characters: {e}"))?;
        let wanted = whisperfleet_shared::character::normalize_name(name);
        list.iter()
            .find(|c| whisperfleet_shared::character::normalize_name(&c.name) == wanted)
            .map(|c| c.name.clone())
            .ok_or_else(|| format!("no character called {name:?} (/characters lists them)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands_and_turns() {
        assert_eq!(parse("  "), Line::Empty);
        assert_eq!(parse("hello there"), Line::Turn("hello there"));
        assert_eq!(parse("/quit"), Line::Quit);
        assert_eq!(parse("/switch  Old Wick "), Line::Switch("Old Wick"));
        assert_eq!(parse("/stats"), Line::Stats);
        assert_eq!(parse("/frobnicate x"), Line::Unknown("frobnicate"));
        assert_eq!(parse("//etc/passwd"), Line::Turn("etc/passwd"));
    }

    #[test]
    fn timing_line_and_stats_table_read_well() {
        let t = [("end_to_end", 812.4), ("llm", 640.0), ("overhead", 172.4)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(timing_line(&t), "⏱ 812 ms · LLM 640 ms · overhead 172 ms");
        let s = MetricsSummary::new();
        s.record("llm", 10.0);
        let table = stats_table(&s.snapshot());
        assert!(table.starts_with("stage"), "{table}");
        assert!(table.lines().nth(1).unwrap().starts_with("llm"), "{table}");
        assert_eq!(stats_table(&[]), "no turns yet");
    }
}
