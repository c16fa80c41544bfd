//! Community character cards end to end (issue 16): `characters import/export/show` on the
//! real PostgreSQL, and card characters' prompts through the real gateway and worker binaries
//! on RabbitMQ, Redis and PostgreSQL, read from the mock LLM's request record.

use std::path::PathBuf;

use serde_json::Value;
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
