//! `testkit-worker` binary: the fleet's worker with the bench's and the fault tests'
//! wrappers (see `whisperfleet_testkit::worker`). Never part of a deployment.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    whisperfleet_testkit::worker::main().await
}
