//! Vector memory: Qdrant's version and the fleet's collection when `QDRANT_URL` is set,
//! otherwise where the embedded store lives (nothing to reach).

use whisperfleet_shared::config::Config;

use super::Check;

const B: &str = "memory";

pub async fn checks(config: &Config) -> Vec<Check> {
    let Some(url) = &config.backends.qdrant_url else {
        let path = config.data_dir().join("memories.sqlite");
        return vec![Check::skip(
            B,
            "configured",
            format!(
                "WHISPERFLEET_QDRANT_URL is not set: memories live in the embedded store {} ({}), \
                 shared only by processes on this host",
                path.display(),
                if path.exists() {
                    "exists"
                } else {
                    "created on first use"
                }
            ),
        )];
    };
    #[cfg(feature = "qdrant")]
    {
        use secrecy::ExposeSecret;
        const VAR: &str = "WHISPERFLEET_QDRANT_URL";
        let b = &config.backends;
        let q = match crate::memory::qdrant::QdrantMemory::connect(
            url.expose_secret(),
            b.qdrant_api_key.clone(),
            &b.qdrant_collection,
            b.embeddings_dims,
            b.qdrant_timeout,
        ) {
            Ok(q) => q,
            Err(e) => {
                return vec![Check::fail(
                    B,
                    "reachable",
                    format!("{VAR}: {e}"),
                    format!("set {VAR}=http://host:6334 (Qdrant's gRPC port)"),
                )];
            }
        };
        let at = super::host_port(url.expose_secret(), 6334);
        match q.inspect().await {
            Err(e) => vec![Check::fail(
                B,
                "reachable",
                {
                    let e = e.to_string();
                    if e.contains("Connection refused") || e.contains("ConnectionRefused") {
                        format!("{VAR}: connection refused at {at} — is Qdrant running?")
                    } else {
                        format!("{VAR}: Qdrant at {at} did not answer: {e}")
                    }
                },
                format!(
                    "start Qdrant, or point {VAR} at its gRPC port (6334); WHISPERFLEET_QDRANT_API_KEY if it needs one"
                ),
            )],
            Ok((version, exists)) => {
                let mut out = vec![Check::ok(B, "reachable", format!("{version} at {at}"))];
                out.push(if exists {
                    Check::ok(
                        B,
                        "collection",
                        format!("collection {:?} exists", b.qdrant_collection),
                    )
                } else {
                    Check::warn(
                        B,
                        "collection",
                        format!("collection {:?} does not exist yet", b.qdrant_collection),
                        "start a worker: it creates the collection and its indexes",
                    )
                });
                out
            }
        }
    }
    #[cfg(not(feature = "qdrant"))]
    {
        let _ = url;
        vec![super::not_built(B, "qdrant")]
    }
}
