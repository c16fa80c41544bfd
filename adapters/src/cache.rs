//! Cache backends: Redis for the fleet, an in-process cache with Redis's semantics when
//! embedded.

#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "redis")]
pub mod redis;
