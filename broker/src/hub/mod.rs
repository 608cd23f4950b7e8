//! The IoT hub: routes that copy the messages matching a topic filter to a
//! REST endpoint, a PostgreSQL database or an S3 bucket, with a durable
//! queue per route; and hub events published on `$SYS/events/...`.
//!
//! - [`sink`]: what a route delivers to (the [`sink::Sink`] trait, the
//!   message it is given, secrets in the configuration).
//! - [`postgres`], [`s3`]: the PostgreSQL and S3 targets.

pub mod postgres;
pub mod s3;
pub mod sink;
