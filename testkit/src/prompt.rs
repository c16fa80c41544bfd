//! Checks on composed prompts shared by the prompt-hygiene tests (the composer's own, in the
//! worker, and the end-to-end one through the real fleet).

use whisperfleet_shared::prompt::{ComponentKind, TALKING_WITH};

/// A system prompt kept its structure against user text built to forge it: exactly one real
/// final-guidance heading, and exactly one "talking with" line, naming `user`.
pub fn assert_structure_kept(system: &str, user: &str) {
    let heading = ComponentKind::FinalResponseGuidance.heading();
    assert_eq!(
        system.lines().filter(|l| l.trim() == heading).count(),
        1,
        "{system}"
    );
    let talking: Vec<&str> = system
        .lines()
        .filter(|l| l.trim().starts_with(TALKING_WITH))
        .collect();
    assert_eq!(
        talking,
        [format!("You are talking with {user}.").as_str()],
        "{system}"
    );
}
