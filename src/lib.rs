//! roster: keeps every Service's Endpoints and EndpointSlices right.
//!
//! Data flows one way: watches ([`controller::watch`]) → compact caches and a label index ([`cache`]) →
//! a queue of Service and BackendSet keys ([`controller::queue`]) → the pure desired state ([`desired`]),
//! compared with what the caches show of roster's objects through the record of its own unshown writes
//! ([`cache::written`]) → the one module that writes ([`write`]), which records its answers there.
//! BackendSets ([`backendset`]) are a source of addresses: their workers' views feed the same queue.

pub mod admin;
pub mod args;
pub mod backendset;
pub mod cache;
pub mod client;
pub mod controller;
pub mod desired;
#[cfg(feature = "dev")]
pub mod dev;
pub mod error;
pub mod explain;
pub mod lease;
pub mod metrics;
pub mod run;
pub mod write;
