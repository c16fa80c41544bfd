//! Vector memory backends: Qdrant for the fleet, exact cosine search over the embedded
//! SQLite store otherwise.

#[cfg(feature = "qdrant")]
pub mod qdrant;
#[cfg(feature = "sqlite")]
pub mod sqlite;
