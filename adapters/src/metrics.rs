//! Metrics sink backends: InfluxDB's v2 write API for the fleet, a line-protocol file (with
//! an in-memory stage summary) when embedded.

#[cfg(feature = "embedded")]
pub mod file;
#[cfg(feature = "influx")]
pub mod influx;
