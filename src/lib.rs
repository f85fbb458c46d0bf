//! gomemlimit-injector: a Kubernetes mutating admission webhook that sets each container's
//! memory request to its limit and hands the limit to the Go runtime as `GOMEMLIMIT`.
//!
//! Dependencies point one way: `cli` → `server`, `manifests`, `live`; `server` →
//! `admission` → `engine` → `policy`, `quantity`; `server` → `tls`, `metrics`,
//! `background` → `live`. What the
//! engine's results say in words is `report`'s, which `admission`, `manifests` and `live`
//! use. The engine is a pure function over JSON values.
#![forbid(unsafe_code)]

pub mod admission;
pub mod background;
pub mod cli;
pub mod engine;
pub mod error;
mod json;
mod json_escape;
pub mod live;
mod manifests;
pub mod metrics;
pub mod native;
pub mod policy;
pub mod quantity;
mod report;
pub mod server;
mod telemetry;
mod text;
pub mod tls;
mod watch;
