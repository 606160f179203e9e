//! The operator's TOML configuration: parsed strictly, checked whole, errors name file and key.
//!
//! A module that a section configures owns that section's type and deserializes it (the
//! store's `[store]`, a receiver's `retry` in dispatch, ...); this module assembles them into
//! the file's whole, reads the tenants' directories, resolves secrets, cross-checks and locates
//! every problem. It sits above the modules whose sections it assembles: none of them imports it.

mod check;
mod errors;
mod file;
mod load;
mod parse;
#[cfg(test)]
mod tests;

pub use crate::tenant::DEFAULT_TENANT;
pub use crate::timeinterval::TimeIntervalConfig;
pub use errors::{ConfigError, ConfigErrors, line_of_key};
pub use file::{Config, ReceiverConfig, TenantConfig, TenantFile, TenantView, TenantsConfig, check_tenant_name, parse_token_hash};
pub use load::tenant_name_of;
