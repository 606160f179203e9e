//! The configuration file as typed data: the top level, the tenants and their receivers, each section deserialized by the module it configures.

use super::errors::ConfigError;
use super::errors::ConfigErrors;
use super::parse::parse_toml;
use crate::plugin::Limits;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::timeinterval::TimeIntervalConfig;

use crate::api::ServerConfig;
use crate::audit::AuditConfig;
use crate::dispatch::{BreakerConfig, RateLimitConfig, RetryConfig};
use crate::escalate::EscalationPolicyConfig;
use crate::ingest::{TenantLimits, TenantLimitsOverride};
use crate::inhibit::InhibitRuleConfig;
use crate::oncall::ScheduleConfig;
use crate::plugin::{PluginSource, RuntimeConfig, SmtpConfig};
use crate::route::{RouteConfig, RouterSpec};
use crate::secrets::SecretsConfig;
use crate::silence::SilencesConfig;
use crate::state::AlertsConfig;
use crate::store::StoreConfig;
use crate::template::TemplateDefaults;
pub use crate::tenant::DEFAULT_TENANT;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP API listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// The plugin runtime: isolation, cache, limits.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Where state is kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Where the audit trail is written.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Master keys for `enc:v1:` values.
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// How long alerts live.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// How long silences are kept.
    #[serde(default)]
    pub silences: SilencesConfig,
    /// Plugins by name: `[plugins.webhook] path = "..."`.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSource>,
    /// The default tenant's receivers: a named plugin with its configuration and grants.
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    /// Where the default tenant's alerts go. Without it there is no default tenant.
    #[serde(default)]
    pub route: Option<RouteConfig>,
    /// The default tenant's inhibition rules.
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// The default tenant's named time intervals.
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalConfig>,
    /// The default tenant's escalation policies.
    #[serde(default)]
    pub escalation_policies: Vec<EscalationPolicyConfig>,
    /// The default tenant's on-call schedules.
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// The default tenant's template language and time zone.
    #[serde(default)]
    pub templates: TemplateDefaults,
    /// API tokens of the default tenant, as `sha256:<hex>` (`belfry token new` makes one). With
    /// none, requests without a token act for the default tenant (single-tenant setups).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// More tenants, one directory each.
    #[serde(default)]
    pub tenants: TenantsConfig,
    /// Per-tenant limits: defaults for every tenant (a tenant's `[limits]` overrides keys).
    #[serde(default)]
    pub limits: TenantLimits,
    /// Tenants read from `[tenants] dir`, in name order.
    #[serde(skip)]
    pub tenant_files: Vec<TenantFile>,
    /// Directory of the config file; relative paths in it resolve against this.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file, for error messages.
    #[serde(skip)]
    pub file: PathBuf,
}

/// `[tenants]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsConfig {
    /// A directory with one subdirectory per tenant, each holding a `tenant.toml`. The
    /// subdirectory's name is the tenant's name. Relative to the config file.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// `tenants/<name>/tenant.toml`: what one tenant owns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// API tokens, as `sha256:<hex>`. A tenant without tokens is reachable only through a
    /// trusted proxy (`X-Scope-OrgID`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// The tenant's receivers.
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    /// Where its alerts go.
    pub route: RouteConfig,
    /// Its inhibition rules.
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// Its named time intervals.
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalConfig>,
    /// Its escalation policies.
    #[serde(default)]
    pub escalation_policies: Vec<EscalationPolicyConfig>,
    /// Its on-call schedules.
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// Its template language and time zone.
    #[serde(default)]
    pub templates: TemplateDefaults,
    /// Overrides of the top-level `[limits]`, key by key.
    #[serde(default)]
    pub limits: TenantLimitsOverride,
}

/// A tenant read from its directory.
#[derive(Debug)]
pub struct TenantFile {
    /// The tenant's name (its directory's name).
    pub name: String,
    /// Its `tenant.toml`.
    pub file: PathBuf,
    /// What it holds.
    pub config: TenantConfig,
}

/// One tenant's part of the configuration, wherever it was written.
#[derive(Debug, Clone)]
pub struct TenantView<'a> {
    /// The tenant's name.
    pub name: &'a str,
    /// The file that defines it, for error messages.
    pub file: &'a Path,
    /// Token hashes.
    pub tokens: &'a [String],
    /// Receivers.
    pub receivers: &'a [ReceiverConfig],
    /// Routing.
    pub route: &'a RouteConfig,
    /// Inhibition rules.
    pub inhibit_rules: &'a [InhibitRuleConfig],
    /// Named time intervals.
    pub time_intervals: &'a [TimeIntervalConfig],
    /// Escalation policies.
    pub escalation_policies: &'a [EscalationPolicyConfig],
    /// On-call schedules.
    pub schedules: &'a [ScheduleConfig],
    /// Template language and time zone.
    pub templates: &'a TemplateDefaults,
    /// Its limits: the top-level `[limits]` with the tenant's overrides.
    pub limits: TenantLimits,
}

/// Tenant names are directory names and store keys: short, lowercase, no separators.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid tenant name: use 1-63 lowercase letters, digits, `-` or `_`, starting with a letter or digit"))
    }
}

/// Parse `sha256:<64 hex>` into the 32-byte hash.
pub fn parse_token_hash(s: &str) -> Result<[u8; 32], String> {
    let hex =
        s.strip_prefix("sha256:").ok_or_else(|| "must look like `sha256:<64 hex digits>`; `belfry token new` prints one".to_string())?;
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("must be `sha256:` followed by 64 hex digits; `belfry token new` prints one".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

impl TenantView<'_> {
    /// The tenant's templates, compiled; a problem names the receiver's `templates.<part>`.
    pub fn templates(&self) -> Result<crate::template::Templates, Vec<ConfigError>> {
        let receivers = self.receivers.iter().map(|r| (r.name.as_str(), &r.templates));
        crate::template::Templates::new(&self.templates.locale, &self.templates.timezone, receivers).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| {
                    let i = self.receivers.iter().position(|r| r.name == e.receiver).unwrap_or(0);
                    let at = e.line.map_or(String::new(), |l| format!(" at line {l} of the template"));
                    ConfigError {
                        line: None,
                        file: self.file.to_path_buf(),
                        key: format!("receivers[{i}].templates.{}", e.part),
                        message: format!("{}{at}", e.message),
                    }
                })
                .collect()
        })
    }
}

/// `[[receivers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Unique name, used by routes.
    pub name: String,
    /// Which plugin delivers (a key of `[plugins]`).
    pub plugin: String,
    /// Hosts the plugin may send HTTP requests to: `example.com`, `*.example.com`, `10.0.0.5`,
    /// optionally with `:port`. Empty means no outbound HTTP at all.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Allow addresses in loopback, private, link-local and other internal ranges. Off by
    /// default so a plugin cannot reach internal services through a lookalike hostname.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Per-receiver limits; defaults from `[runtime.limits]`.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Notify when a group's alerts resolve (Alertmanager's `send_resolved`).
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Where a notification goes instead when this receiver's circuit breaker is open or its
    /// retries are exhausted: another receiver of the same tenant (which may fail over in turn).
    #[serde(default)]
    pub fallback: Option<String>,
    /// At most this many notifications per period to this receiver (e.g. Slack's 1 per second);
    /// the rest wait their turn. None: no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// How failed deliveries are retried.
    #[serde(default)]
    pub retry: RetryConfig,
    /// When the receiver is considered down and skipped for a while.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The plugin's configuration, checked by its `validate-config`. Strings may hold
    /// `${ENV_VAR}`, `${file:/path}` or `enc:v1:` secrets, resolved when the config loads.
    #[serde(default)]
    pub config: toml::Table,
    /// Title and body templates overriding the tenant's defaults for this receiver.
    #[serde(default)]
    pub templates: crate::template::TemplatesConfig,
    /// The SMTP server the plugin may send mail through (the email channel). Absent: the
    /// plugin has no SMTP capability at all.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// The secret values resolved into `config`, masked wherever they could show.
    #[serde(skip)]
    pub secrets: Vec<String>,
}

pub(super) fn default_true() -> bool {
    true
}

impl TenantView<'_> {
    /// What the tenant's router is built from; the script path resolved against the tenant's file.
    pub fn router_spec(&self) -> RouterSpec {
        let (view, route) = (self, self.route);
        RouterSpec {
            tenant: view.name.to_string(),
            fallback: route.receiver.clone(),
            defaults: crate::route::RouteOptions {
                group_by: crate::route::GroupBy::from_names(route.group_by.clone()).unwrap_or(crate::route::GroupBy::Labels(Vec::new())),
                group_wait: route.group_wait,
                group_interval: route.group_interval,
                repeat_interval: route.repeat_interval,
                escalation: route.escalation.clone(),
                ..crate::route::RouteOptions::default()
            },
            receivers: view.receivers.iter().map(|r| r.name.clone()).collect(),
            time_intervals: view.time_intervals.iter().map(|i| i.name.clone()).collect(),
            escalation_policies: view.escalation_policies.iter().map(|p| p.name.clone()).collect(),
            script: route.script.as_ref().map(|p| {
                let base = view.file.parent().unwrap_or(Path::new("."));
                let path = if p.is_absolute() { p.clone() } else { base.join(p) };
                // Absolute and canonical, so file-change events can be matched to it.
                match (path.parent().and_then(|d| std::fs::canonicalize(d).ok()), path.file_name()) {
                    (Some(dir), Some(name)) => dir.join(name),
                    _ => path,
                }
            }),
        }
    }
}

impl Config {
    /// Every tenant: the default one (top-level `[route]`), then those from `[tenants] dir`.
    pub fn tenants(&self) -> Vec<TenantView<'_>> {
        let default = self.route.as_ref().map(|route| TenantView {
            name: DEFAULT_TENANT,
            file: &self.file,
            tokens: &self.tokens,
            receivers: &self.receivers,
            route,
            inhibit_rules: &self.inhibit_rules,
            time_intervals: &self.time_intervals,
            escalation_policies: &self.escalation_policies,
            schedules: &self.schedules,
            templates: &self.templates,
            limits: self.limits.clone(),
        });
        default
            .into_iter()
            .chain(self.tenant_files.iter().map(|t| TenantView {
                name: &t.name,
                file: &t.file,
                tokens: &t.config.tokens,
                receivers: &t.config.receivers,
                route: &t.config.route,
                inhibit_rules: &t.config.inhibit_rules,
                time_intervals: &t.config.time_intervals,
                escalation_policies: &t.config.escalation_policies,
                schedules: &t.config.schedules,
                templates: &t.config.templates,
                limits: self.limits.with(&t.config.limits),
            }))
            .collect()
    }

    /// Parse TOML text; an error comes back as (location, message).
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        parse_toml(text)
    }

    /// The keyring of `[secrets.keys]`.
    pub fn keyring(&self) -> Result<crate::secrets::Keyring, ConfigErrors> {
        crate::secrets::Keyring::load(&self.secrets.keys, &self.base_dir)
            .map_err(|(key, message)| ConfigErrors(vec![ConfigError { line: None, file: self.file.clone(), key, message }]))
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    /// The external URL, or one derived from the listen address.
    pub fn external_url(&self, bound: SocketAddr) -> String {
        self.server.external_url.clone().unwrap_or_else(|| format!("http://{bound}"))
    }
}
