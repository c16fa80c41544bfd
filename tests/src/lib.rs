//! End-to-end tests only (under `tests/`): they run the real binaries against real services.
//! Their fixtures, stand-ins and contract suites live in `whisperfleet-testkit`.
