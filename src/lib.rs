//! roster: keeps every Service's Endpoints and EndpointSlices right.
//!
//! Data flows one way: watches ([`controller::watch`]) → compact caches and a label index ([`cache`]) →
//! a queue of Service keys ([`controller::queue`]) → the pure desired state ([`desired`]) → a diff against
//! what the server has ([`controller::objects`]) → the one module that writes ([`apply`]).

pub mod admin;
pub mod args;
pub mod backendset;
pub mod cache;
pub mod controller;
pub mod desired;
#[cfg(feature = "dev")]
pub mod dev;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod run;
pub mod write;
