//! gomemlimit-injector: a Kubernetes mutating admission webhook that sets each container's
//! memory request to its limit and hands the limit to the Go runtime as `GOMEMLIMIT`.
//!
//! Dependencies point one way: `server` → `admission` → `engine` → `quantity`/`policy`;
//! `server` → `tls`, `metrics`. The engine is a pure function over JSON values.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cli;
pub mod engine;
pub mod error;
pub mod live;
mod manifests;
pub mod metrics;
pub mod policy;
pub mod quantity;
pub mod report;
pub mod server;
pub mod telemetry;
pub mod text;
pub mod tls;
mod watch;
