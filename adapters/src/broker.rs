//! Broker backends: RabbitMQ (lapin) for the fleet, an in-process broker with the same
//! contract for the one-process `up`/`chat`.

#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
