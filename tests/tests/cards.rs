//! Community character cards end to end (issue 16): `characters import/export/show` on the
//! real PostgreSQL, and card characters' prompts through the real gateway and worker binaries
//! on RabbitMQ, Redis and PostgreSQL, read from the mock LLM's request record.

use std::path::PathBuf;

use serde_json::{Value, json};
use whisperfleet_testkit::*;

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/cards")
}

fn fixture(name: &str) -> String {
    fixtures().join(name).to_str().unwrap().to_string()
}

fn scratch(fleet: &Fleet, name: &str) -> PathBuf {
    let dir = bin_dir().join("test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", fleet.name))
}

#[tokio::test(flavor = "multi_thread")]
async fn cards_import_show_and_export_round_trip() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fleet = Fleet::new("cards_cli").unwrap();

    // A directory of good cards and bad ones: each file reported, every good one imported,
    // the command fails saying how many did not import.
    let dir = scratch(&fleet, "cards");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "v1.png",
        "v2_lorebook.png",
        "v3_both.png",
        "v3.charx",
        "bad/no_chunk.png",
        "bad/bad_base64.png",
        "bad/bad_json.json",
        "bad/no_name.json",
        "bad/no_card.charx",
    ] {
        std::fs::copy(fixtures().join(f), dir.join(f.replace('/', "_"))).unwrap();
    }
    let err = fleet
        .cli(&["characters", "import", dir.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    for (file, says) in [
        ("bad_no_chunk.png", "no `ccv3` or `chara` tEXt chunk"),
        ("bad_bad_base64.png", "`chara` chunk is not valid base64"),
        ("bad_bad_json.json", "invalid JSON"),
        ("bad_no_name.json", "card has no name"),
        ("bad_no_card.charx", "CHARX has no card.json"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("{file} not reported: {err}"));
        assert!(line.contains(says), "{line}");
    }
    assert!(err.contains("5 of 9 files not imported"), "{err}");
    let list = fleet.cli(&["characters", "list"]).unwrap();
    for name in ["Vera One", "Lyra Vale", "Nova Three", "Charx Cat"] {
        assert!(list.contains(name), "{name} imported: {list}");
    }
    assert!(!list.contains("Nova Two"), "ccv3 wins over chara: {list}");

    // `show` says where a character came from and how much lore it has.
    let show = fleet.cli(&["characters", "show", "Lyra Vale"]).unwrap();
    assert!(
        show.contains("# source: png card chara_card_v2 2.0"),
        "{show}"
    );
    assert!(show.contains("# lorebook entries: 8"), "{show}");
    let show = fleet.cli(&["characters", "show", "Charx Cat"]).unwrap();
    assert!(
        show.contains("# source: charx card chara_card_v3 3.0"),
        "{show}"
    );
    assert!(
        show.contains("embeded://assets/icon/images/main.png"),
        "{show}"
    );
    let nora = fleet.cli(&["characters", "show", "Vera One"]).unwrap();
    assert!(nora.contains("# source: png card v1"), "{nora}");

    // Export in the card's own spec gives the original back byte for byte; the other spec
    // keeps every field and extension.
    let original = std::fs::read_to_string(fixtures().join("v2.json")).unwrap();
    let original: Value = serde_json::from_str(&original).unwrap();
    let v2 = fleet
        .cli(&["characters", "export", "Lyra Vale", "--format", "v2"])
        .unwrap();
    let v2: Value = serde_json::from_str(&v2).unwrap();
    assert_eq!(v2, original, "the original card, every field and extension");
    let v3 = fleet
        .cli(&["characters", "export", "Lyra Vale", "--format", "v3"])
        .unwrap();
    let v3: Value = serde_json::from_str(&v3).unwrap();
    assert_eq!(v3["spec"], "chara_card_v3");
    for (k, v) in original["data"].as_object().unwrap() {
        assert_eq!(&v3["data"][k], v, "{k} kept in the V3 export");
    }

    // PNG export carries both chunks; importing it again changes nothing but the version.
    let png = scratch(&fleet, "lyra.png");
    fleet
        .cli(&[
            "characters",
            "export",
            "Lyra Vale",
            "--png",
            png.to_str().unwrap(),
        ])
        .unwrap();
    let bytes = std::fs::read(&png).unwrap();
    let chunks = whisperfleet_shared::cards::png::text_chunks(&bytes).unwrap();
    let names: Vec<&str> = chunks.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["chara", "ccv3"]);
    let out = fleet
        .cli(&["characters", "import", png.to_str().unwrap()])
        .unwrap();
    assert!(out.contains("imported Lyra Vale"), "{out}");
    let again: Value = serde_json::from_str(
        &fleet
            .cli(&["characters", "export", "Lyra Vale", "--format", "v3"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(again, v3, "a round trip through PNG keeps the card");

    // A standalone lorebook and a World Info file attach to a character and survive a
    // re-import of its card.
    for book in ["lorebook_v3.json", "world_info.json"] {
        let out = fleet
            .cli(&[
                "characters",
                "import",
                "--lorebook",
                &fixture(book),
                "--character",
                "Lyra Vale",
            ])
            .unwrap();
        assert!(out.contains("attached"), "{out}");
    }
    fleet
        .cli(&["characters", "import", &fixture("v2_lorebook.png")])
        .unwrap();
    let show = fleet.cli(&["characters", "show", "Lyra Vale"]).unwrap();
    assert!(show.contains("# lorebook entries: 10"), "{show}");

    // The project's own format still imports and says so.
    let own = fleet
        .cli(&[
            "characters",
            "import",
            repo_root()
                .join("characters/nora-halvorsen.yaml")
                .to_str()
                .unwrap(),
        ])
        .unwrap();
    assert!(own.contains("whisperfleet format"), "{own}");
    let show = fleet
        .cli(&["characters", "show", "Nora Halvorsen"])
        .unwrap();
    assert!(show.contains("# source: whisperfleet format"), "{show}");
}

fn lyra(user: &str, name: &str, text: &str) -> Value {
    json!({"character": "Lyra Vale", "user_id": user, "user_name": name, "text": text})
}

fn system_of(req: &Value) -> String {
    req["messages"][0]["content"].as_str().unwrap().to_string()
}

/// A card character through the real fleet: its greeting opens a new conversation (and is
/// kept), a message mentioning a lorebook key brings that entry in and one that does not
/// leaves it out, the lorebook's token budget holds, creator notes never reach the model,
/// `{{user}}` is the user's display name, and the turn counts its lore entries.
#[tokio::test(flavor = "multi_thread")]
async fn card_characters_prompts_through_the_fleet() {
    let mut s = setup("cards_prompt", mock_latency(0)).await;
    s.fleet
        .cli(&["characters", "import", &fixture("v2_lorebook.png")])
        .unwrap();
    s.fleet
        .cli(&[
            "characters",
            "import",
            "--lorebook",
            &fixture("world_info.json"),
            "--character",
            "Lyra Vale",
        ])
        .unwrap();
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();
    let client = reqwest::Client::new();

    let (status, first) = post_turn(&client, &base, lyra("u1", "Sam Quill", "hello there"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["outcome"], "ok", "{first}");
    assert_eq!(
        first["counters"]["lore_entries_used"], 1,
        "the constant entry: {first}"
    );
    let (_, second) = post_turn(
        &client,
        &base,
        lyra(
            "u1",
            "Sam Quill",
            "Tell me about the Silver Harbor and the library.",
        ),
    )
    .await
    .unwrap();
    assert_eq!(second["outcome"], "ok", "{second}");
    let (_, other) = post_turn(&client, &base, lyra("u2", "Ada", "hi"))
        .await
        .unwrap();
    assert_eq!(other["outcome"], "ok", "{other}");

    let (_, kraken) = post_turn(&client, &base, lyra("u2", "Ada", "Is the kraken awake?"))
        .await
        .unwrap();
    assert_eq!(kraken["outcome"], "ok", "{kraken}");

    let prompts = recorded(&s.record);
    assert_eq!(prompts.len(), 4);
    // An attached World Info book counts like the card's own.
    assert!(system_of(&prompts[3]).contains("LORE-WI-KRAKEN"));
    assert!(!system_of(&prompts[2]).contains("LORE-WI-KRAKEN"));
    assert_eq!(kraken["counters"]["lore_entries_used"], 2, "{kraken}");
    let greetings = ["FIRST-GREETING", "ALT-GREETING-1", "ALT-GREETING-2"];
    let greeting_of = |req: &Value| -> String {
        let m = &req["messages"][1];
        assert_eq!(
            m["role"], "assistant",
            "the greeting opens the history: {req}"
        );
        let text = m["content"].as_str().unwrap().to_string();
        assert!(greetings.iter().any(|g| text.starts_with(g)), "{text}");
        text
    };

    // First turn: the greeting, with the user's display name; no lore key mentioned.
    let one = &prompts[0];
    let greeting = greeting_of(one);
    assert!(greeting.contains("Sam Quill"), "{greeting}");
    let sys = system_of(one);
    assert!(
        sys.contains("talks to Sam Quill like an old friend"),
        "{sys}"
    );
    assert!(
        sys.contains("CARD-SYSTEM: You play Lyra Vale for Sam Quill."),
        "{sys}"
    );
    assert!(sys.contains("LORE-CONSTANT"));
    assert!(!sys.contains("LORE-HARBOR"), "no key, no entry: {sys}");
    assert!(!sys.contains("LORE-DISABLED"));
    let last = one["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["role"], "system");
    assert_eq!(
        last["content"],
        "POST-HISTORY: stay in the archive, Sam Quill."
    );

    // Second turn: the same greeting kept; the harbor entry (and, recursively, the
    // lighthouse one) in; the library entry over the lorebook's token budget, out.
    let two = &prompts[1];
    assert_eq!(greeting_of(two), greeting, "the greeting is kept");
    let sys = system_of(two);
    assert!(sys.contains("LORE-HARBOR"), "{sys}");
    assert!(sys.contains("LORE-LIGHTHOUSE"), "{sys}");
    assert!(
        !sys.contains("LORE-LIBRARY"),
        "over the token budget: {sys}"
    );
    assert_eq!(second["counters"]["lore_entries_used"], 3, "{second}");
    // The lore the prompt carries stays within the book's budget of 60 tokens.
    let lore_tokens: usize = ["LORE-HARBOR", "LORE-LIGHTHOUSE", "LORE-CONSTANT"]
        .iter()
        .map(|tag| {
            let line = sys.lines().find(|l| l.starts_with(tag)).unwrap();
            line.chars().count().div_ceil(4)
        })
        .sum();
    assert!(lore_tokens <= 60, "{lore_tokens}");

    // Another user's conversation gets its own greeting, with their name.
    assert!(greeting_of(&prompts[2]).contains("Ada") || !greeting_of(&prompts[2]).contains("Sam"));

    for req in &prompts {
        let all = prompt_text(req);
        assert!(
            !all.contains("CREATOR-NOTES"),
            "creator notes in a prompt: {all}"
        );
        assert!(!all.to_lowercase().contains("{{user}}"), "{all}");
        assert!(
            !all.contains("<USER>") && !all.contains("{{char}}"),
            "{all}"
        );
    }
}

/// The embedded fleet (SQLite, nothing configured) takes cards too: a CHARX imports, shows
/// where it came from, exports its card.json back unchanged, and chats.
#[test]
fn embedded_fleet_imports_and_chats_with_a_card() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = bin_dir()
        .join("test-logs")
        .join(format!("cards-embedded-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let embedded = |args: &[&str]| {
        let mut cmd = Command::new(bin("whisperfleet"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.join("home"))
            .env("WHISPERFLEET_DATA_DIR", dir.join("data"))
            .env("WHISPERFLEET_GATEWAY_ID", "cards-embedded")
            .args(args);
        cmd
    };
    let run = |args: &[&str]| {
        let out = embedded(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = run(&["characters", "import", &fixture("v3.charx")]);
    assert!(out.contains("imported Charx Cat"), "{out}");
    let show = run(&["characters", "show", "Charx Cat"]);
    assert!(
        show.contains("# source: charx card chara_card_v3 3.0"),
        "{show}"
    );
    let exported = run(&["characters", "export", "Charx Cat"]);
    let original = whisperfleet_shared::cards::charx::card_json(
        &std::fs::read(fixtures().join("v3.charx")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        exported.trim_end(),
        original,
        "card.json back, byte for byte"
    );

    let mut child = embedded(&["chat", "--character", "Charx Cat", "--user", "ada"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "hello cat").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[offline responder]"),
        "an answer: {stdout}"
    );
}
