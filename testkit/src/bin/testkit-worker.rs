//! `testkit-worker` binary: the fleet's worker with the bench's and the fault tests'
//! wrappers (see `whisperfleet_testkit::worker`). Never part of a deployment.

/// mimalloc: glibc malloc/free were a measured share of every turn's CPU (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    whisperfleet_testkit::worker::main().await
}
