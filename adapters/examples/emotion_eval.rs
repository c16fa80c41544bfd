//! Scores the built-in emotion analyzer on the labelled sentences in
//! `adapters/data/emotion-eval.tsv` (or a file given as the first argument): overall and
//! per-label accuracy, the most common confusions, and the time per `analyze()` call.
//!
//! ```text
//! cargo run -p whisperfleet-adapters --example emotion_eval [--release] [-- FILE] [--misses]
//! ```
//!
//! Timing is only representative with `--release`.

use std::time::Instant;

use whisperfleet_adapters::emotion::lexicon::{LexiconAnalyzer, parse_labelled};
use whisperfleet_shared::ports::{EMOTION_LABELS, EmotionAnalyzer};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let show_misses = args.iter().any(|a| a == "--misses");
    let text = match args.iter().find(|a| !a.starts_with("--")) {
        Some(path) => std::fs::read_to_string(path)?,
        None => include_str!("../data/emotion-eval.tsv").to_owned(),
    };
    let set = parse_labelled(&text).map_err(anyhow::Error::msg)?;
    let analyzer = LexiconAnalyzer::new();
    println!("{}", analyzer.describe());

    let index = |label: &str| EMOTION_LABELS.iter().position(|l| *l == label);
    let n = EMOTION_LABELS.len();
    // confusion[expected][predicted]
    let mut confusion = vec![vec![0u32; n]; n];
    let mut misses = Vec::new();
    for (expected, sentence) in &set {
        let result = analyzer.analyze(sentence);
        let (Some(e), Some(p)) = (index(expected), index(&result.primary)) else {
            anyhow::bail!("unknown label in {expected:?} / {:?}", result.primary);
        };
        confusion[e][p] += 1;
        if e != p {
            misses.push((expected, result, sentence));
        }
    }

    let correct: u32 = (0..n).map(|i| confusion[i][i]).sum();
    println!(
        "\noverall accuracy: {correct}/{} = {:.1}%",
        set.len(),
        100.0 * f64::from(correct) / set.len() as f64
    );
    println!(
        "\n{:<13} {:>8} {:>9} {:>10}",
        "label", "correct", "recall", "precision"
    );
    for (i, label) in EMOTION_LABELS.iter().enumerate() {
        let total: u32 = confusion[i].iter().sum();
        let predicted: u32 = confusion.iter().map(|row| row[i]).sum();
        let pct = |num: u32, den: u32| {
            if den == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}%", 100.0 * f64::from(num) / f64::from(den))
            }
        };
        println!(
            "{label:<13} {:>8} {:>9} {:>10}",
            format!("{}/{total}", confusion[i][i]),
            pct(confusion[i][i], total),
            pct(confusion[i][i], predicted),
        );
    }

    let mut pairs = Vec::new();
    for (e, row) in confusion.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            if e != p && count > 0 {
                pairs.push((count, EMOTION_LABELS[e], EMOTION_LABELS[p]));
            }
        }
    }
    // Most frequent first; label order breaks ties.
    pairs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(b.2)));
    println!("\nconfusions (expected → predicted):");
    if pairs.is_empty() {
        println!("  none");
    }
    for (count, expected, predicted) in &pairs {
        println!("  {count:>3} × {expected} → {predicted}");
    }

    if show_misses {
        println!("\nmisclassified:");
        for (expected, result, sentence) in &misses {
            println!(
                "  [{expected} → {} i={:.2} c={:.2} {:?}] {sentence}",
                result.primary, result.intensity, result.confidence, result.secondary
            );
        }
    }

    // Timing: every sentence many times, so the figure is per call, not per process start.
    let rounds = 2_000;
    let started = Instant::now();
    let mut sink = 0usize;
    for _ in 0..rounds {
        for (_, sentence) in &set {
            sink += analyzer
                .analyze(std::hint::black_box(sentence))
                .primary
                .len();
        }
    }
    let calls = rounds * set.len();
    let per_call = started.elapsed().as_secs_f64() / calls as f64;
    std::hint::black_box(sink);
    println!(
        "\ntiming: {:.2} µs per analyze() over {calls} calls (mean sentence {:.0} chars; {})",
        per_call * 1e6,
        set.iter().map(|(_, s)| s.chars().count()).sum::<usize>() as f64 / set.len() as f64,
        if cfg!(debug_assertions) {
            "debug build: use --release for a representative figure"
        } else {
            "release build"
        }
    );
    Ok(())
}
