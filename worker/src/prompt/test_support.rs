//! Test fixture shared by the component tests: a sample character with every CDL section set.

use whisperfleet_shared::character::*;

pub(super) fn sample(archetype: Archetype, full: bool) -> Character {
    let mut c = Character {
        name: "Tess Marlow".into(),
        occupation: "oceanographer".into(),
        description: "Studies currents from a small boat.".into(),
        archetype,
        allow_full_roleplay: full,
        emoji_frequency: "low".into(),
        emoji_style: "ocean_nature".into(),
        ..Default::default()
    };
    c.personality = BigFive {
        openness: 0.9,
        conscientiousness: 0.7,
        extraversion: 0.3,
        agreeableness: 0.55,
        neuroticism: 0.39,
    };
    c.communication.response_length = "short".into();
    c.communication.formality = "casual".into();
    c.background = (1..=5)
        .map(|i| BackgroundEntry {
            title: format!("bg{i}"),
            importance_level: i,
            ..Default::default()
        })
        .collect();
    c.values = vec![
        CharacterValue {
            key: "low_one".into(),
            importance: "low".into(),
            ..Default::default()
        },
        CharacterValue {
            key: "critical_one".into(),
            importance: "critical".into(),
            description: "matters most".into(),
        },
        CharacterValue {
            key: "high_one".into(),
            importance: "high".into(),
            ..Default::default()
        },
        CharacterValue {
            key: "medium_one".into(),
            importance: "medium".into(),
            ..Default::default()
        },
    ];
    c.speech_patterns = vec![
        SpeechPattern {
            pattern_type: "avoided_word".into(),
            pattern_value: "synergy".into(),
            priority: 9,
            ..Default::default()
        },
        SpeechPattern {
            pattern_type: "signature_expression".into(),
            pattern_value: "Low sig".into(),
            priority: 1,
            ..Default::default()
        },
        SpeechPattern {
            pattern_type: "signature_expression".into(),
            pattern_value: "High sig".into(),
            priority: 8,
            usage_frequency: "often".into(),
            ..Default::default()
        },
        SpeechPattern {
            pattern_type: "preferred_word".into(),
            pattern_value: "brine".into(),
            priority: 5,
            ..Default::default()
        },
    ];
    c.interests = vec![
        Interest {
            interest_text: "knitting".into(),
            proficiency_level: 2,
            ..Default::default()
        },
        Interest {
            interest_text: "ocean currents".into(),
            proficiency_level: 10,
            ..Default::default()
        },
    ];
    c.response_guidelines = vec![
        ResponseGuideline {
            guideline_name: "minor".into(),
            guideline_content: "be tidy".into(),
            priority: 1,
            ..Default::default()
        },
        ResponseGuideline {
            guideline_name: "no_lists".into(),
            guideline_content: "never use bullet lists".into(),
            priority: 10,
            is_critical: true,
            ..Default::default()
        },
    ];
    c.ai_scenarios = vec![
        AiScenario {
            scenario_type: "ai_identity_question".into(),
            trigger_phrases: vec!["are you a program".into()],
            response_guidance: "Mention the boat.".into(),
        },
        AiScenario {
            scenario_type: "secret_word".into(),
            trigger_phrases: vec!["Kraken Time".into()],
            response_guidance: "Tell the kraken story.".into(),
        },
    ];
    c
}
