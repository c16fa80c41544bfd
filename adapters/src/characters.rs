//! Character store backends: PostgreSQL for the fleet, SQLite when embedded.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
