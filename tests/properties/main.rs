//! Properties of the pure layer (`roster::desired`) and of the caches (`roster::cache`), over random Services
//! and pods built through the same decoders the watches use.
//!
//! Every expectation is recomputed here from the documented rules (README rows F6–F20, F24, F27, F30, F31), never
//! by calling roster's own helpers: the produced Endpoints and EndpointSlices are valid API objects, contain
//! exactly the eligible pods, are deterministic and independent of pod and event order, and a second pass
//! over what was just written plans no write.
//!
//! `roster explain`'s verdicts are checked against both: the model, and the Endpoints roster computes.
//!
//! `generators` makes the random Services, pods and selectors; `model` recomputes what roster should
//! produce and checks it as the API server would; each other module holds the properties of one subject.

mod generators;
mod model;
#[path = "../support/mod.rs"]
mod support;

mod cache;
mod endpoints;
mod explain;
mod hints;
mod mirroring;
mod selectors;
mod slices;
