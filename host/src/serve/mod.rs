//! Wires config, plugins, tenants, routing, state, dispatch and the API into the running daemon, and rebuilds the tenants on reload.

mod build;
mod check;
mod daemon;
mod error;
mod start;

pub use check::{Checked, Preview, check, preview};
pub use daemon::Daemon;
pub use error::StartError;
pub use start::{Running, start};
