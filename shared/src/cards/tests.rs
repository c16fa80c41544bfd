use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/cards")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn card(name: &str) -> Card {
    match Card::from_bytes(&fixture(name)).unwrap() {
        Imported::Card(c) => *c,
        Imported::OwnFormat => panic!("{name} read as the own format"),
    }
}

fn err(bytes: &[u8]) -> CardError {
    Card::from_bytes(bytes).unwrap_err()
}

#[test]
fn v1_png_and_json_read_the_flat_fields() {
    for (file, container) in [("v1.png", Container::Png), ("v1.json", Container::Json)] {
        let c = card(file);
        assert_eq!(c.spec, Spec::V1);
        assert_eq!(c.container, container);
        assert_eq!(c.data.name, "Vera One");
        assert!(c.data.first_mes.contains("Come in out of the rain"));
        assert!(c.data.mes_example.starts_with("<START>"));
        assert_eq!(c.data.personality, "patient, dry humour");
    }
}

#[test]
fn v2_png_keeps_every_field_extension_and_lore_entry() {
    let c = card("v2_lorebook.png");
    assert_eq!((c.spec, c.spec_version.as_str()), (Spec::V2, "2.0"));
    assert_eq!(c.data.alternate_greetings.len(), 2);
    assert_eq!(c.data.tags, ["archive", "harbor"]);
    assert_eq!(c.data.character_version, "1.2");
    assert!(c.data.creator_notes.starts_with("CREATOR-NOTES-SECRET"));
    assert_eq!(
        c.data.extensions["x_custom"]["unicode"],
        Value::String("café ☃".into())
    );
    let book = c.data.character_book.as_ref().unwrap();
    assert_eq!(book.entries.len(), 8);
    assert_eq!(book.token_budget, Some(60));
    assert_eq!(book.scan_depth, Some(4));
    assert!(book.entries[1].use_regex);
    assert!(book.entries[2].constant);
    assert!(!book.entries[3].enabled);
    assert_eq!(book.entries[6].position, LorePosition::AfterChar);
    assert_eq!(book.entries[7].case_sensitive, Some(true));
    // The JSON fixture is the same card: same typed view.
    assert_eq!(card("v2.json").data, c.data);
}

#[test]
fn png_with_both_chunks_prefers_ccv3() {
    let c = card("v3_both.png");
    assert_eq!(c.spec, Spec::V3);
    assert_eq!(c.data.name, "Nova Three");
    assert_eq!(c.char_name(), "Nova");
    assert_eq!(c.data.group_only_greetings, ["GROUP-ONLY"]);
    assert_eq!(c.data.source, ["https://example.invalid/nova"]);
    assert_eq!(
        c.data.creation_date.as_ref().unwrap().as_i64(),
        Some(1700000000)
    );
    assert_eq!(c.data.creator_notes_multilingual["fr"], "notes V3");
    assert!(!c.raw.contains("V2-BACKFILL"));
}

#[test]
fn charx_reads_card_json_from_a_deflated_archive() {
    let c = card("v3.charx");
    assert_eq!(c.container, Container::Charx);
    assert_eq!(c.data.name, "Charx Cat");
    assert_eq!(
        c.data.assets[0].uri,
        "embeded://assets/icon/images/main.png"
    );
    // Our own writer's stored archives read back too.
    let zip = charx::write(&[("x/y.txt", b"hi"), ("card.json", c.raw.as_bytes())]);
    assert_eq!(charx::card_json(&zip).unwrap(), c.raw);
}

#[test]
fn bad_cards_say_what_is_wrong() {
    assert_eq!(err(&fixture("bad/no_chunk.png")), CardError::NoCardChunk);
    assert!(
        matches!(err(&fixture("bad/bad_base64.png")), CardError::BadBase64 { chunk, .. } if chunk == "chara")
    );
    assert!(matches!(
        err(&fixture("bad/bad_json.json")),
        CardError::Json(_)
    ));
    assert_eq!(err(&fixture("bad/no_name.json")), CardError::MissingName);
    assert_eq!(err(&fixture("bad/no_card.charx")), CardError::NoCardJson);
    assert!(matches!(
        err(br#"{"spec": "chara_card_v9", "data": {"name": "x"}}"#),
        CardError::UnknownSpec(s) if s == "chara_card_v9"
    ));
    // Over the limits, each saying which.
    let huge = format!(
        r#"{{"spec":"chara_card_v2","data":{{"name":"x","description":"{}"}}}}"#,
        "a".repeat(MAX_JSON_BYTES)
    );
    assert!(matches!(
        err(huge.as_bytes()),
        CardError::TooLarge {
            what: "card JSON",
            ..
        }
    ));
    let in_png = png::write(&[("chara", &huge)]);
    assert!(matches!(
        err(&in_png),
        CardError::TooLarge {
            what: "card JSON",
            ..
        }
    ));
    let big_file = vec![b' '; MAX_FILE_BYTES + 1];
    assert!(matches!(
        err(&big_file),
        CardError::TooLarge { what: "file", .. }
    ));
    // A truncated PNG is an error, not a panic.
    let v1 = fixture("v1.png");
    assert!(matches!(err(&v1[..40]), CardError::BadPng(_)));
}

#[test]
fn own_format_json_is_not_a_card() {
    let own = br#"{"name": "Elena", "occupation": "biologist", "personality": {"openness": 0.8}}"#;
    assert_eq!(Card::from_bytes(own).unwrap(), Imported::OwnFormat);
    assert_eq!(
        Card::from_bytes(b"name: Elena\n").unwrap(),
        Imported::OwnFormat
    );
}

#[test]
fn newer_v3_minor_version_imports_with_a_warning() {
    let c = Card::from_json(
        r#"{"spec":"chara_card_v3","spec_version":"3.1","data":{"name":"Future","x_new":1}}"#,
        Container::Json,
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("3.1"));
}

#[test]
fn export_in_own_spec_is_the_original_and_across_specs_keeps_every_field() {
    for file in ["v2_lorebook.png", "v3_both.png", "v3.charx"] {
        let c = card(file);
        assert_eq!(c.export(c.spec).unwrap(), c.raw, "{file}");
    }
    let v2 = card("v2.json");
    let original: Value = serde_json::from_str(&v2.raw).unwrap();
    let v3: Value = serde_json::from_str(&v2.export(Spec::V3).unwrap()).unwrap();
    assert_eq!(v3["spec"], "chara_card_v3");
    assert_eq!(v3["spec_version"], "3.0");
    assert_eq!(v3["data"]["group_only_greetings"], Value::Array(vec![]));
    for (k, v) in original["data"].as_object().unwrap() {
        assert_eq!(&v3["data"][k], v, "{k}");
    }
    // And back: V3 → V2 restores the original V2 value exactly (plus the V3-required field).
    let back = Card::from_json(&v2.export(Spec::V3).unwrap(), Container::Json).unwrap();
    let mut again: Value = serde_json::from_str(&back.export(Spec::V2).unwrap()).unwrap();
    again["data"]
        .as_object_mut()
        .unwrap()
        .remove("group_only_greetings");
    assert_eq!(again, original);
    // V1 exports as V2 with its fields under data.
    let v1 = card("v1.json");
    let out: Value = serde_json::from_str(&v1.export(Spec::V2).unwrap()).unwrap();
    assert_eq!(out["data"]["first_mes"], v1.data.first_mes.as_str());
}

#[test]
fn stored_form_round_trips() {
    let c = card("v2_lorebook.png");
    let stored = serde_json::to_string(&c).unwrap();
    let back: Card = serde_json::from_str(&stored).unwrap();
    assert_eq!(back, c);
}

#[test]
fn exported_png_carries_both_chunks() {
    let c = card("v3_both.png");
    let png = png::write(&[
        ("chara", &c.export(Spec::V2).unwrap()),
        ("ccv3", &c.export(Spec::V3).unwrap()),
    ]);
    let chunks = png::text_chunks(&png).unwrap();
    assert_eq!(
        chunks.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["chara", "ccv3"]
    );
    assert_eq!(png::card_json(&png).unwrap(), c.raw);
}

#[test]
fn standalone_lorebooks_read_both_forms() {
    let v3 =
        Lorebook::from_json(std::str::from_utf8(&fixture("lorebook_v3.json")).unwrap()).unwrap();
    assert_eq!(v3.entries.len(), 1);
    assert_eq!(v3.scan_depth, Some(2));
    let wi =
        Lorebook::from_json(std::str::from_utf8(&fixture("world_info.json")).unwrap()).unwrap();
    assert_eq!(wi.entries[0].keys, ["kraken"]);
    assert!(wi.entries[0].content.starts_with("LORE-WI-KRAKEN"));
    assert_eq!(wi.entries[0].extensions["world_info"]["comment"], "sea");
    assert!(matches!(
        Lorebook::from_json(r#"{"spec":"chara_card_v2"}"#),
        Err(CardError::NotLorebook(_))
    ));
    assert!(lorebook::is_slash_regex("/drag(on|ons)\\b/i"));
    assert!(!lorebook::is_slash_regex("/usr"));
}

#[test]
fn values_other_tools_write_are_read_and_a_bad_field_is_named() {
    // Numbers for text, null for lists, a string for a list, comma-separated keys,
    // "true"/1 for flags, a string date: read, and the original kept as written.
    let raw = r#"{"spec":"chara_card_v2","spec_version":"2.0","data":{"name":"Messy",
        "character_version":2,"tags":null,"alternate_greetings":"only one","creator":null,
        "extensions":null,"creation_date":"1700000000",
        "character_book":{"scan_depth":"3","token_budget":null,"recursive_scanning":"true",
          "entries":[{"keys":"alpha, beta","content":"x","enabled":null,"constant":1,
                      "insertion_order":"5","secondary_keys":null,"priority":null}]}}}"#;
    let c = Card::from_json(raw, Container::Json).unwrap();
    assert_eq!(c.data.character_version, "2");
    assert!(c.data.tags.is_empty());
    assert_eq!(c.data.alternate_greetings, ["only one"]);
    assert_eq!(
        c.data.creation_date.as_ref().unwrap().as_i64(),
        Some(1700000000)
    );
    let book = c.data.character_book.as_ref().unwrap();
    assert_eq!(book.scan_depth, Some(3));
    assert_eq!(book.recursive_scanning, Some(true));
    let e = &book.entries[0];
    assert_eq!(e.keys, ["alpha", "beta"]);
    assert!(e.enabled && e.constant);
    assert_eq!(e.insertion_order, 5.0);
    assert_eq!(c.export(Spec::V2).unwrap(), raw, "the original, as written");

    let bad = r#"{"spec":"chara_card_v2","data":{"name":"Bad","description":{"not":"text"}}}"#;
    let err = Card::from_json(bad, Container::Json).unwrap_err();
    assert!(
        matches!(&err, CardError::Field { field, .. } if field == "data.description"),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("field data.description: "),
        "{err}"
    );
}
