//! The pure desired-state layer: from cache records to the objects roster should write.
//!
//! Nothing here does I/O, awaits, or reads a clock; time comes in as arguments. A Service's endpoints come
//! from [`EndpointSource`]s: its pods, or the backends of the BackendSet bound to it. The pipeline for one
//! Service:
//!
//! 1. [`verdict`] decides, with [`readiness`] and [`ports`], whether each source is an endpoint, in which
//!    condition and on which ports, and if not why (`roster explain` shows the same decision);
//! 2. [`desired_endpoints`] builds the canonical, truncated Endpoints and [`endpoints_need_write`] compares it
//!    with the current object;
//! 3. [`desired_slices`] plans EndpointSlice creates, updates and deletes against the existing slices, with
//!    the topology [`hints`] the Service asks for;
//! 4. [`desired_mirrored_slices`] does the same for Endpoints of selectorless Services;
//! 5. [`TriggerTimeTracker`] supplies the last-change-trigger-time annotation;
//! 6. [`holddown`] decides whether a flapping pod stays out of the ready endpoints a while longer.
//!
//! Equal inputs give equal outputs, and an existing object that already matches produces no write.

mod allocation;
pub mod compare;
mod endpoints;
pub mod hints;
pub mod holddown;
pub mod labels;
mod mirroring;
pub mod ports;
pub mod readiness;
mod repack;
mod slices;
mod source;
mod trigger;
pub mod verdict;

#[cfg(test)]
mod endpoints_tests;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod mirroring_tests;
#[cfg(test)]
mod slices_tests;

pub use endpoints::{
    DesiredEndpoints, EndpointsInput, desired_endpoints, endpoints_change, endpoints_ip, endpoints_labels,
    endpoints_need_write, released_endpoints,
};
pub use hints::{HintsDisabled, HintsMode, HintsOutcome, TopologyInput, ZoneCapacity};
pub use labels::*;
pub use mirroring::desired_mirrored_slices;
pub use repack::{count_addresses, repack_subsets};
pub use slices::{
    SkipReason, SliceInput, SlicePlan, SliceStats, controller_reference, desired_slices, slice_families,
    slice_labels,
};
pub use source::{EndpointSource, pod_reference};
pub use trigger::{TriggerTimeTracker, format_trigger_time};
pub use verdict::{
    EndpointsEntry, Exclusion, ResolvedPort, SliceEntry, endpoints_entry, resolved_ports, slice_entry,
};
