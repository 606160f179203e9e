//! Write a Belfry channel plugin: implement [`Plugin`], call [`export_plugin!`].
//!
//! A plugin turns one [`Notification`] into a request to one outside service. The host does
//! everything else (routing, grouping, retries, breakers, failover, audit); the plugin only
//! builds the request, sends it with [`http`], and says how it went.
//!
//! ```ignore
//! use belfry_plugin_sdk::{export_plugin, http, Config, DeliveryError, DeliveryReport, Notification, Plugin};
//!
//! struct Echo;
//! struct EchoConfig { url: String }
//!
//! impl Plugin for Echo {
//!     type Config = EchoConfig;
//!     const NAME: &'static str = "echo";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const DESCRIPTION: &'static str = "POSTs the group key";
//!
//!     fn config(c: &mut Config) -> EchoConfig {
//!         EchoConfig { url: c.url("url", "Where to POST") }
//!     }
//!
//!     fn deliver(config: EchoConfig, n: Notification) -> Result<DeliveryReport, DeliveryError> {
//!         let response = http::post(&config.url).body(n.group_key.into_bytes()).send()?.check()?;
//!         Ok(response.report(None))
//!     }
//! }
//! export_plugin!(Echo);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: the result is a component.
#![deny(missing_docs)]

mod config;
pub mod http;
pub mod log;
pub mod mail;
pub mod time;

pub use config::Config;

/// The plugin's allocator: talc, cheaper than Rust's default dlmalloc for the small, short-lived
/// blocks a delivery allocates (docs/PLUGINS.md). `default-features = false` on the SDK leaves
/// the choice to the plugin.
#[cfg(all(feature = "talc", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

#[doc(hidden)]
#[allow(missing_docs)]
pub mod __bindings {
    wit_bindgen::generate!({
        world: "receiver",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_receiver",
        default_bindings_module: "belfry_plugin_sdk::__bindings",
    });
}

use __bindings::belfry::receiver::types;

/// One alert, as Alertmanager defines it.
pub use types::Alert;
/// Firing or resolved.
pub use types::AlertStatus;
/// One thing wrong with a receiver's configuration.
pub use types::ConfigError;
/// One field of a plugin's configuration schema.
pub use types::ConfigField;
/// One value of a receiver's configuration.
pub use types::ConfigValue;
/// Why a delivery did not go through, and whether to retry.
pub use types::DeliveryError;
/// What the service said when it accepted a notification.
pub use types::DeliveryReport;
/// The type of a config field.
pub use types::FieldKind;
/// A group of alerts to deliver to one receiver.
pub use types::Notification;
/// What a plugin says about itself.
pub use types::PluginInfo;
/// A failure worth retrying, with the wait the service asked for.
pub use types::RetryableError;

/// A channel plugin.
///
/// The configuration is declared once, in [`Plugin::config`]: the same function gives the
/// host the plugin's schema (`describe`), validates a receiver's configuration with an error
/// per bad field (`validate-config`), and builds the typed configuration for `deliver`.
pub trait Plugin {
    /// The plugin's typed configuration.
    type Config;
    /// Short, stable name operators refer to, e.g. `webhook`.
    const NAME: &'static str;
    /// The plugin's version; `env!("CARGO_PKG_VERSION")` is the usual choice.
    const VERSION: &'static str;
    /// One line for operators.
    const DESCRIPTION: &'static str;
    /// Whether the plugin shows the notification's `title` and `body` (rendered from the
    /// tenant's templates). Plugins that send only structured alerts set it to false, and the
    /// host skips rendering for them.
    const USES_TEXT: bool = true;

    /// Read the configuration through `c`. Every getter records its field in the schema and
    /// any problem with the receiver's value; when there are problems, the value returned
    /// here is discarded, so getters return placeholders for bad fields.
    fn config(c: &mut Config) -> Self::Config;

    /// Deliver one notification.
    fn deliver(config: Self::Config, notification: Notification) -> Result<DeliveryReport, DeliveryError>;
}

/// Glue between the generated export trait and [`Plugin`]; used by [`export_plugin!`].
#[doc(hidden)]
pub mod __export {
    use super::*;

    pub fn describe<P: Plugin>() -> PluginInfo {
        let mut c = Config::schema_only();
        let _ = P::config(&mut c);
        PluginInfo {
            name: P::NAME.to_string(),
            version: P::VERSION.to_string(),
            description: P::DESCRIPTION.to_string(),
            config_schema: c.into_schema(),
            uses_text: P::USES_TEXT,
        }
    }

    pub fn validate_config<P: Plugin>(config: Vec<(String, ConfigValue)>) -> Result<(), Vec<ConfigError>> {
        let mut c = Config::new(config);
        let _ = P::config(&mut c);
        c.finish().map(|_| ())
    }

    pub fn deliver<P: Plugin>(config: Vec<(String, ConfigValue)>, notification: Notification) -> Result<DeliveryReport, DeliveryError> {
        let mut c = Config::new(config);
        let typed = P::config(&mut c);
        match c.finish() {
            Ok(()) => P::deliver(typed, notification),
            Err(errors) => Err(DeliveryError::Misconfigured(
                errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "),
            )),
        }
    }
}

/// Export `$plugin` (a type implementing [`Plugin`]) as this component's plugin.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct BelfryExport;
            impl $crate::__bindings::exports::belfry::receiver::plugin::Guest for BelfryExport {
                fn describe() -> $crate::PluginInfo {
                    $crate::__export::describe::<$plugin>()
                }
                fn validate_config(
                    config: ::std::vec::Vec<(::std::string::String, $crate::ConfigValue)>,
                ) -> ::std::result::Result<(), ::std::vec::Vec<$crate::ConfigError>> {
                    $crate::__export::validate_config::<$plugin>(config)
                }
                fn deliver(
                    config: ::std::vec::Vec<(::std::string::String, $crate::ConfigValue)>,
                    notification: $crate::Notification,
                ) -> ::std::result::Result<$crate::DeliveryReport, $crate::DeliveryError> {
                    $crate::__export::deliver::<$plugin>(config, notification)
                }
            }
    $crate::__bindings::__export_receiver!(BelfryExport with_types_in $crate::__bindings);
        };
    };
}

/// At most `max` characters of `text` (never splitting a character), the last one `…` when
/// cut: how channels keep within a service's field limits.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The notification's rendered title, or when the host sent none, Alertmanager's
/// `[FIRING:2] alertname` / `[RESOLVED] alertname` (`[ACK by alice] alertname` for an ack).
///
/// An acknowledgement always says so: a rendered title that does not name who acknowledged
/// (a tenant's own title template written for firing groups) gets `[ACK by alice] ` in front,
/// so it cannot be mistaken for the firing notification it follows.
pub fn title(n: &Notification) -> String {
    if let Some(title) = n.title.as_deref().filter(|t| !t.trim().is_empty()) {
        return match &n.acked_by {
            Some(by) if !title.contains(by.as_str()) => format!("[ACK by {by}] {title}"),
            _ => title.to_string(),
        };
    }
    let firing = n.alerts.iter().filter(|a| a.status == AlertStatus::Firing).count();
    let name = pair(&n.common_labels, "alertname").unwrap_or("alerts");
    if let Some(by) = &n.acked_by {
        return format!("[ACK by {by}] {name}");
    }
    match n.status {
        AlertStatus::Firing => format!("[FIRING:{firing}] {name}"),
        AlertStatus::Resolved => format!("[RESOLVED] {name}"),
    }
}

/// The acknowledge link for the plugin to show (a button, a link line), or `None` when there is
/// none or when the tenant's rendered title or body already carries it: one message never
/// shows the link twice. The plugin renders the link; a template that writes `ackURL` itself
/// takes that over.
pub fn ack_link(n: &Notification) -> Option<&str> {
    let url = n.ack_url.as_deref().filter(|u| u.starts_with("http://") || u.starts_with("https://"))?;
    let in_text = [&n.title, &n.body].into_iter().flatten().any(|text| text.contains(url));
    (!in_text).then_some(url)
}

/// How urgent a notification is, for a channel's colours and icons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// Every alert resolved.
    Resolved,
    /// Firing with `severity` `critical`, `page` or `error`.
    Critical,
    /// Firing with `severity` `warning`.
    Warning,
    /// Firing with any other severity, or none.
    Info,
}

impl Urgency {
    /// A colour for it, `#RRGGBB`: green when resolved; red, amber or blue by severity (Slack's
    /// palette, which the email channel shares).
    pub fn colour(self) -> &'static str {
        match self {
            Urgency::Resolved => "#2EB67D",
            Urgency::Critical => "#E01E5A",
            Urgency::Warning => "#ECB22E",
            Urgency::Info => "#36C5F0",
        }
    }
}

/// The notification's [`Urgency`], from its status and its alerts' common `severity` label.
pub fn urgency(n: &Notification) -> Urgency {
    if n.status == AlertStatus::Resolved {
        return Urgency::Resolved;
    }
    match pair(&n.common_labels, "severity").unwrap_or("") {
        "critical" | "page" | "error" => Urgency::Critical,
        "warning" => Urgency::Warning,
        _ => Urgency::Info,
    }
}

/// Look up `name` in a sorted `(name, value)` list (labels, annotations, headers).
pub fn pair<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

impl DeliveryError {
    /// A retryable failure without a requested wait.
    pub fn retryable(message: impl Into<String>) -> Self {
        DeliveryError::Retryable(RetryableError { message: message.into(), retry_after_ms: None })
    }
}
