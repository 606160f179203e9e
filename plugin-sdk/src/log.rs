//! Log lines into the host's structured log (tagged with tenant, receiver and plugin by the host).

use crate::__bindings::belfry::receiver::log::{Level, write};

/// Debug detail, off by default in production.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Normal operation worth recording.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Something odd that did not stop the delivery.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Something failed.
pub fn error(message: &str) {
    write(Level::Error, message);
}
