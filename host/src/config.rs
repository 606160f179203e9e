//! The operator's TOML configuration: parsed strictly, checked whole, errors name file and key.

use crate::plugin::Limits;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

fn default_true() -> bool {
    true
}

/// A problem with the configuration: where, and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The key at fault, e.g. `receivers[0].config.url`; a `line N` location for syntax errors.
    pub key: String,
    /// The line the key is on, once [`ConfigErrors::located`] looked it up.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `file:line: key: message`, or `file:line: message` when the key is only a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match (self.line, self.key.strip_prefix("line ")) {
            (_, Some(line)) => write!(f, "{file}:{line}: {}", self.message),
            (Some(line), None) => write!(f, "{file}:{line}: {}: {}", self.key, self.message),
            (None, None) if self.key == "-" => write!(f, "{file}: {}", self.message),
            (None, None) => write!(f, "{file}: {}: {}", self.key, self.message),
        }
    }
}

impl ConfigErrors {
    /// These problems, then those a later stage of checking found, except where an earlier
    /// one already names the same key of the same file (a secret that did not resolve is not
    /// also a bad URL).
    pub fn and_then_later(mut self, later: ConfigErrors) -> ConfigErrors {
        for e in later.0 {
            if !self.0.iter().any(|earlier| earlier.file == e.file && earlier.key == e.key) {
                self.0.push(e);
            }
        }
        self
    }

    /// Every problem, with the line of its key looked up in its file (each file read once).
    pub fn located(mut self) -> ConfigErrors {
        let mut texts: std::collections::HashMap<PathBuf, Option<String>> = std::collections::HashMap::new();
        for e in &mut self.0 {
            if e.line.is_some() || e.key.starts_with("line ") {
                continue;
            }
            let text = texts.entry(e.file.clone()).or_insert_with(|| std::fs::read_to_string(&e.file).ok());
            e.line = text.as_deref().and_then(|t| line_of_key(t, &e.key));
        }
        self
    }
}

/// The line (1-based) where `key` (`receivers[0].config.url`, `route.receiver`) is set in the
/// TOML `text`, or where the deepest part of it that exists is.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    'segments: for segment in key.split('.') {
        let (name, indexes) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        let Some((_, mut value)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name) else { break };
        found = Some(value.span().start);
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            let (Ok(i), DeValue::Array(items)) = (index.parse::<usize>(), value.get_ref()) else { break 'segments };
            let Some(item) = items.get(i) else { break 'segments };
            found = Some(item.span().start);
            value = item;
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found.map(|at| text[..at.min(text.len())].matches('\n').count() + 1)
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

/// Every problem found in one configuration.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Read and check `file`. Plugin-specific checks happen when the plugins load.
    pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
        match Config::load_all(file) {
            (Some(config), errors) if errors.0.is_empty() => Ok(config),
            (_, errors) => Err(errors),
        }
    }

    /// Read and check `file`, going on past every problem that leaves something to check: a
    /// key the file gets wrong is noted and left out, a tenant whose file does not parse is
    /// left out, a secret that does not resolve is noted, and the cross-references are checked
    /// on what remains. The configuration is `None` only when the file itself cannot be read
    /// or parsed; with problems, it is fit for checking (`belfry check` goes on to the
    /// plugins with it), never for serving.
    pub fn load_all(file: &Path) -> (Option<Config>, ConfigErrors) {
        Config::load_with(file, None)
    }

    /// [`Config::load_all`] with the tenant directory `dir` (its `tenant.toml`, script and
    /// templates, wherever it is checked out) in place of the platform's copy of that tenant:
    /// how a tenant checks their own repository against the platform's configuration. The
    /// tenant is named after the directory.
    pub fn load_with_tenant(file: &Path, dir: &Path) -> (Option<Config>, ConfigErrors) {
        Config::load_with(file, Some(dir))
    }

    fn load_with(file: &Path, local_tenant: Option<&Path>) -> (Option<Config>, ConfigErrors) {
        let error = |key: &str, message: String| ConfigError { line: None, file: file.to_path_buf(), key: key.into(), message };
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => return (None, ConfigErrors(vec![error("-", format!("cannot read the config file: {e} (check the --config path)"))])),
        };
        let (config, problems) = parse_toml_all::<Config>(&text);
        let mut errors: Vec<ConfigError> = problems.into_iter().map(|(key, message)| error(&key, message)).collect();
        let Some(mut config) = config else { return (None, ConfigErrors(errors).located()) };
        config.file = file.to_path_buf();
        config.base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        config.tenant_files = config.read_tenant_dirs(&mut errors);
        if let Some(dir) = local_tenant {
            let name = dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
            config.tenant_files.retain(|t| t.name != name);
            errors.retain(|e| !e.file.ends_with(Path::new(&name).join("tenant.toml")));
            if let Some(tenant) = config.read_tenant(dir, name, &mut errors) {
                config.tenant_files.push(tenant);
            }
        }
        config.resolve_secrets(&mut errors);
        config.check(&mut errors);
        (Some(config), ConfigErrors(errors).located())
    }

    /// Every `tenants/<name>/tenant.toml`, in name order, with each problem in `errors`; a
    /// tenant whose file does not parse is left out.
    fn read_tenant_dirs(&self, errors: &mut Vec<ConfigError>) -> Vec<TenantFile> {
        let Some(dir) = &self.tenants.dir else { return Vec::new() };
        let dir = self.resolve(dir);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push(ConfigError {
                    line: None,
                    file: self.file.clone(),
                    key: "tenants.dir".into(),
                    message: format!("cannot read {}: {e}", dir.display()),
                });
                return Vec::new();
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        let mut tenants = Vec::new();
        for name in names {
            if let Some(tenant) = self.read_tenant(&dir.join(&name), name, errors) {
                tenants.push(tenant);
            }
        }
        tenants
    }

    /// The tenant `name` from its directory `dir`, with each problem in `errors`; `None` when
    /// its `tenant.toml` cannot be read or parsed, or the name is refused.
    fn read_tenant(&self, dir: &Path, name: String, errors: &mut Vec<ConfigError>) -> Option<TenantFile> {
        let file = dir.join("tenant.toml");
        let mut fail = |key: String, message: String| errors.push(ConfigError { line: None, file: file.clone(), key, message });
        if let Err(why) = check_tenant_name(&name) {
            fail("-".into(), format!("{why} (rename the directory)"));
            return None;
        }
        if name == DEFAULT_TENANT && self.route.is_some() {
            fail("-".into(), "the top-level [route] already defines tenant `default`; rename this directory or move its settings".into());
            return None;
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                fail("-".into(), format!("cannot read it: {e} (every tenant directory needs a tenant.toml)"));
                return None;
            }
        };
        let (config, problems) = parse_toml_all::<TenantConfig>(&text);
        for (key, message) in problems {
            fail(key, message);
        }
        config.map(|config| TenantFile { name, file, config })
    }

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

    /// Resolve the secret references in every receiver's `config`, in every file; each
    /// problem (in `errors`) names the field, never a secret.
    fn resolve_secrets(&mut self, errors: &mut Vec<ConfigError>) {
        let keyring = match self.keyring() {
            Ok(keyring) => keyring,
            Err(problems) => {
                errors.extend(problems.0);
                return;
            }
        };
        let base_dir = self.base_dir.clone();
        let mut files: Vec<(PathBuf, &mut Vec<ReceiverConfig>)> = vec![(self.file.clone(), &mut self.receivers)];
        files.extend(self.tenant_files.iter_mut().map(|t| (t.file.clone(), &mut t.config.receivers)));
        for (file, receivers) in files {
            // `${file:...}` is relative to the file that says it (a tenant.toml's own directory).
            let base_dir = file.parent().map_or_else(|| base_dir.clone(), Path::to_path_buf);
            for (i, r) in receivers.iter_mut().enumerate() {
                let mut secrets = Vec::new();
                for (field, value) in r.config.iter_mut() {
                    let mut fail = |path: String, message: String| {
                        errors.push(ConfigError { line: None, file: file.clone(), key: format!("receivers[{i}].config.{path}"), message })
                    };
                    let mut resolve = |text: &mut String, path: String| match crate::secrets::resolve(text, &keyring, &base_dir) {
                        Ok(resolved) => {
                            *text = resolved.value;
                            secrets.extend(resolved.secrets);
                        }
                        Err(message) => fail(path, message),
                    };
                    match value {
                        toml::Value::String(s) => resolve(s, field.clone()),
                        toml::Value::Array(items) => {
                            for (j, item) in items.iter_mut().enumerate() {
                                if let toml::Value::String(s) = item {
                                    resolve(s, format!("{field}[{j}]"));
                                }
                            }
                        }
                        toml::Value::Table(table) => {
                            for (k, item) in table.iter_mut() {
                                if let toml::Value::String(s) = item {
                                    resolve(s, format!("{field}.{k}"));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(password) = r.smtp.as_mut().and_then(|smtp| smtp.password.as_mut()) {
                    match crate::secrets::resolve(password, &keyring, &base_dir) {
                        Ok(resolved) => *password = resolved.value,
                        Err(message) => errors.push(ConfigError {
                            line: None,
                            file: file.clone(),
                            key: format!("receivers[{i}].smtp.password"),
                            message,
                        }),
                    }
                    // Masked whether it was written in the file or resolved from a reference.
                    secrets.push(password.clone());
                }
                r.secrets = secrets;
            }
        }
    }

    /// Cross-references: unique receivers, known plugins, a routed receiver, valid tokens; for
    /// every tenant, each problem named in the file that defines it.
    fn check(&self, errors: &mut Vec<ConfigError>) {
        let mut push =
            |file: &Path, key: String, message: String| errors.push(ConfigError { line: None, file: file.to_path_buf(), key, message });
        if self.route.is_none() && !self.receivers.is_empty() {
            push(&self.file, "route".into(), "the top-level [[receivers]] need a [route] table naming where alerts go".into());
        }
        if self.route.is_none() && self.tenant_files.is_empty() {
            push(
                &self.file,
                "route".into(),
                "no tenant is defined: add a [route] (and [[receivers]]) for the default tenant, or [tenants] dir".into(),
            );
        }
        for tenant in self.tenants() {
            for (i, r) in tenant.receivers.iter().enumerate() {
                if r.name.trim().is_empty() {
                    push(tenant.file, format!("receivers[{i}].name"), "must not be empty".into());
                }
                if tenant.receivers[..i].iter().any(|o| o.name == r.name) {
                    push(
                        tenant.file,
                        format!("receivers[{i}].name"),
                        format!("receiver `{}` is defined twice; give each receiver its own name", r.name),
                    );
                }
                if !self.plugins.contains_key(&r.plugin) {
                    let known: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
                    push(
                        tenant.file,
                        format!("receivers[{i}].plugin"),
                        format!(
                            "unknown plugin `{}`; declare it under [plugins.{}] in {} (known: {})",
                            r.plugin,
                            r.plugin,
                            self.file.display(),
                            known.join(", ")
                        ),
                    );
                }
                for (j, host) in r.allowed_hosts.iter().enumerate() {
                    if let Err(why) = crate::plugin::HostPattern::parse(host) {
                        push(tenant.file, format!("receivers[{i}].allowed_hosts[{j}]"), why);
                    }
                }
                if let Err((key, why)) = check_delivery_policy(r, tenant.receivers) {
                    push(tenant.file, format!("receivers[{i}].{key}"), why);
                }
                for (key, why) in r.smtp.iter().flat_map(|smtp| smtp.check(&self.base_dir)) {
                    push(tenant.file, format!("receivers[{i}].smtp.{key}"), why);
                }
            }
            if !tenant.receivers.iter().any(|r| r.name == tenant.route.receiver) {
                push(
                    tenant.file,
                    "route.receiver".into(),
                    format!("no receiver is named `{}`; add a [[receivers]] entry with that name", tenant.route.receiver),
                );
            }
            let route = tenant.route;
            if let Err(why) = crate::route::GroupBy::from_names(route.group_by.clone()) {
                push(tenant.file, "route.group_by".into(), why);
            }
            if route.group_interval.is_zero() {
                push(tenant.file, "route.group_interval".into(), "must be at least 1s".into());
            }
            for (i, rule) in tenant.inhibit_rules.iter().enumerate() {
                if let Err((key, why)) = crate::inhibit::InhibitRule::parse(rule) {
                    push(tenant.file, format!("inhibit_rules[{i}].{key}"), why);
                }
            }
            if !crate::template::LOCALES.contains(&tenant.templates.locale.as_str()) {
                push(
                    tenant.file,
                    "templates.locale".into(),
                    format!("`{}` has no default templates; use one of {}", tenant.templates.locale, crate::template::LOCALES.join(", ")),
                );
            }
            if tenant.templates.timezone.parse::<chrono_tz::Tz>().is_err() {
                push(
                    tenant.file,
                    "templates.timezone".into(),
                    format!("unknown time zone `{}` (use e.g. Europe/Paris)", tenant.templates.timezone),
                );
            }
            if let Err(problems) = tenant.templates() {
                for p in problems {
                    push(tenant.file, p.key, p.message);
                }
            }
            for (i, policy) in tenant.escalation_policies.iter().enumerate() {
                let key = |k: String| format!("escalation_policies[{i}].{k}");
                if tenant.escalation_policies[..i].iter().any(|o| o.name == policy.name) {
                    push(tenant.file, key("name".into()), format!("`{}` is defined twice", policy.name));
                }
                if policy.steps.is_empty() {
                    push(tenant.file, key("steps".into()), "needs at least one step".into());
                }
                for (j, step) in policy.steps.iter().enumerate() {
                    if step.wait < Duration::from_secs(1) {
                        push(tenant.file, key(format!("steps[{j}].wait")), "must be at least 1s".into());
                    }
                    if step.notify.is_empty() && step.notify_on_call.is_empty() {
                        push(
                            tenant.file,
                            key(format!("steps[{j}].notify")),
                            "name at least one receiver (or a schedule in notify_on_call)".into(),
                        );
                    }
                    for name in step.notify_on_call.iter().filter(|n| !tenant.schedules.iter().any(|s| &s.name == *n)) {
                        push(
                            tenant.file,
                            key(format!("steps[{j}].notify_on_call")),
                            format!("no schedule is named `{name}`; add a [[schedules]] entry"),
                        );
                    }
                    for name in step.notify.iter().filter(|n| !tenant.receivers.iter().any(|r| &r.name == *n)) {
                        push(tenant.file, key(format!("steps[{j}].notify")), format!("no receiver is named `{name}`"));
                    }
                    for name in step.active_time_intervals.iter().filter(|n| !tenant.time_intervals.iter().any(|t| &t.name == *n)) {
                        push(tenant.file, key(format!("steps[{j}].active_time_intervals")), format!("no time interval is named `{name}`"));
                    }
                }
            }
            for (i, schedule) in tenant.schedules.iter().enumerate() {
                let key = |k: &str| format!("schedules[{i}].{k}");
                if tenant.schedules[..i].iter().any(|o| o.name == schedule.name) {
                    push(tenant.file, key("name"), format!("`{}` is defined twice", schedule.name));
                }
                if let Err(problems) = crate::oncall::Schedule::from_config(schedule) {
                    for (k, message) in problems {
                        push(tenant.file, key(&k), message);
                    }
                }
                let receivers = schedule
                    .rotations
                    .iter()
                    .enumerate()
                    .flat_map(|(j, r)| r.receivers.iter().map(move |n| (format!("rotations[{j}].receivers"), n)));
                let overrides = schedule.overrides.iter().enumerate().map(|(j, o)| (format!("overrides[{j}].receiver"), &o.receiver));
                for (k, name) in receivers.chain(overrides).filter(|(_, n)| !tenant.receivers.iter().any(|r| &r.name == *n)) {
                    push(tenant.file, key(&k), format!("no receiver is named `{name}`"));
                }
                for (j, r) in schedule.rotations.iter().enumerate() {
                    for name in r.active_time_intervals.iter().filter(|n| !tenant.time_intervals.iter().any(|t| &t.name == *n)) {
                        push(
                            tenant.file,
                            key(&format!("rotations[{j}].active_time_intervals")),
                            format!("no time interval is named `{name}`"),
                        );
                    }
                }
            }
            if let Some(name) = &tenant.route.escalation
                && !tenant.escalation_policies.iter().any(|p| &p.name == name)
            {
                push(
                    tenant.file,
                    "route.escalation".into(),
                    format!("no escalation policy is named `{name}`; add an [[escalation_policies]] entry"),
                );
            }
            for (i, interval) in tenant.time_intervals.iter().enumerate() {
                if tenant.time_intervals[..i].iter().any(|o| o.name == interval.name) {
                    push(tenant.file, format!("time_intervals[{i}].name"), format!("`{}` is defined twice", interval.name));
                }
                if let Err((key, why)) = crate::timeinterval::TimeInterval::parse(interval) {
                    push(tenant.file, format!("time_intervals[{i}].{key}"), why);
                }
            }
            let l = &tenant.limits;
            if l.ingest_rate == 0 || l.ingest_burst == 0 {
                push(tenant.file, "limits.ingest_rate".into(), "ingest_rate and ingest_burst must be at least 1".into());
            } else if (l.ingest_burst as usize) < l.max_alerts_per_request {
                push(
                    tenant.file,
                    "limits.ingest_burst".into(),
                    format!(
                        "{} is below max_alerts_per_request ({}): a full request could never pass; raise it",
                        l.ingest_burst, l.max_alerts_per_request
                    ),
                );
            }
            for (i, token) in tenant.tokens.iter().enumerate() {
                if let Err(why) = parse_token_hash(token) {
                    push(tenant.file, format!("tokens[{i}]"), why);
                }
            }
        }
        for (i, token) in self.server.admin_tokens.iter().enumerate() {
            if let Err(why) = parse_token_hash(token) {
                push(&self.file, format!("server.admin_tokens[{i}]"), why);
            }
        }
        if self.alerts.sweep_interval.is_zero() {
            push(&self.file, "alerts.sweep_interval".into(), "must be greater than zero, e.g. \"1s\"".into());
        }
        for (name, p) in &self.plugins {
            if let Some(sha) = &p.sha256
                && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
            {
                push(&self.file, format!("plugins.{name}.sha256"), "must be 64 hex digits (sha256sum of the .wasm)".into());
            }
        }
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

/// A receiver's fallback, rate limit, retry and breaker settings, checked against its tenant's
/// receivers: the fallback exists and no chain of fallbacks comes back to where it started.
fn check_delivery_policy(r: &ReceiverConfig, all: &[ReceiverConfig]) -> Result<(), (String, String)> {
    if let Some(rate) = &r.rate_limit
        && (rate.messages == 0 || rate.burst == Some(0) || rate.per.is_zero())
    {
        return Err(("rate_limit".into(), "messages, burst and per must be greater than zero".into()));
    }
    if r.retry.max_attempts == 0 {
        return Err(("retry.max_attempts".into(), "must be at least 1 (1 means: never retry)".into()));
    }
    if r.retry.initial_backoff.is_zero() || r.retry.max_backoff < r.retry.initial_backoff {
        return Err(("retry".into(), "initial_backoff must be greater than zero and at most max_backoff".into()));
    }
    if r.breaker.failure_threshold == 0 || r.breaker.open_for.is_zero() {
        return Err(("breaker".into(), "failure_threshold and open_for must be greater than zero".into()));
    }
    let mut chain = vec![r.name.as_str()];
    let mut next = r.fallback.as_deref();
    while let Some(name) = next {
        let Some(fallback) = all.iter().find(|o| o.name == name) else {
            return Err(("fallback".into(), format!("no receiver is named `{name}` in this tenant")));
        };
        if chain.contains(&name) {
            chain.push(name);
            return Err((
                "fallback".into(),
                format!("the fallbacks form a loop: {}; end the chain at a receiver without one", chain.join(" -> ")),
            ));
        }
        chain.push(name);
        next = fallback.fallback.as_deref();
    }
    Ok(())
}

/// Parse TOML text into `T`; an error comes back as (`line N`, message), the message led by
/// the key at fault (`route.repeat_interval: invalid type: integer 4, expected a duration`).
fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
    let line_at = |at: usize| format!("line {}", text[..at.min(text.len())].matches('\n').count() + 1);
    let fail = toml_problem;
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| {
        let span = e.span();
        // A syntax error (a duplicate key, say): name the key its span points at.
        let key = span.clone().and_then(|s| text.get(s)).map(str::trim).filter(|k| !k.is_empty() && !k.contains('\n'));
        fail(span.map_or("-".to_string(), |s| line_at(s.start)), key.map(str::to_string), e.message())
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let key = (path != "." && !path.is_empty()).then_some(path);
        fail(inner.span().map_or("-".to_string(), |s| line_at(s.start)), key, inner.message())
    })
}

/// The most keys [`parse_toml_all`] leaves out of one file before it gives up.
const MAX_KEYS_LEFT_OUT: usize = 64;

/// Parse TOML text into `T` and report every problem, not the first: a key the schema refuses
/// (unknown, of the wrong type, an invalid value) is reported and left out, and the rest is
/// parsed again, until it parses or a problem cannot be left out (a required key missing, an
/// item of a list: leaving it out would renumber the rest). `None` when it never parsed.
/// Problems are (location, message) as [`parse_toml`] gives them.
fn parse_toml_all<T: serde::de::DeserializeOwned>(text: &str) -> (Option<T>, Vec<(String, String)>) {
    let first = match parse_toml::<T>(text) {
        Ok(value) => return (Some(value), Vec::new()),
        Err(first) => first,
    };
    // A syntax error leaves nothing to go on with.
    let Ok(mut table) = text.parse::<toml::Table>() else { return (None, vec![first]) };
    let mut problems = Vec::new();
    while problems.len() < MAX_KEYS_LEFT_OUT {
        let error = match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone())) {
            // Parsed from the table although the text did not: nothing to say but the first problem.
            Ok(_) if problems.is_empty() => return (None, vec![first]),
            Ok(value) => return (Some(value), problems),
            Err(error) => error,
        };
        let path = error.path().to_string();
        let message = error.into_inner().message().trim_end().to_string();
        // `unknown field `x`` is reported at the table that holds it.
        let unknown = message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()).map(str::to_string);
        let target = match (&unknown, path.as_str()) {
            (Some(field), "." | "") => field.clone(),
            (Some(field), parent) if !parent.ends_with(&format!(".{field}")) && parent != field => format!("{parent}.{field}"),
            (_, path) => path.to_string(),
        };
        let location = line_of_key(text, &target).map_or_else(|| target.clone(), |line| format!("line {line}"));
        let key = (path != "." && !path.is_empty()).then_some(path);
        problems.push(toml_problem(location, key, &message));
        if target.ends_with(']') || !remove_key(&mut table, &target) {
            return (None, problems);
        }
    }
    (None, problems)
}

/// Take `path` (`route.group_wait`, `receivers[0].config`) out of `table`; false when it names
/// nothing there.
fn remove_key(table: &mut toml::Table, path: &str) -> bool {
    let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut at = table;
    for segment in parent.split('.').filter(|s| !s.is_empty()) {
        let (name, indexes) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        let mut value = match at.get_mut(name) {
            Some(value) => value,
            None => return false,
        };
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            value = match (index.parse::<usize>(), value) {
                (Ok(i), toml::Value::Array(items)) if i < items.len() => &mut items[i],
                _ => return false,
            };
        }
        at = match value {
            toml::Value::Table(t) => t,
            _ => return false,
        };
    }
    at.remove(last).is_some()
}

/// A TOML problem as (location, message): the key it is about, what is wrong, how to write it.
fn toml_problem(location: String, key: Option<String>, message: &str) -> (String, String) {
    let mut message = message.trim_end().to_string();
    if message.contains("expected a duration") || (message.starts_with("invalid value") && key.as_deref().is_some_and(is_duration_key)) {
        message.push_str(r#"; write a duration like "30s", "5m" or "4h""#);
    }
    let key = key.map(|k| format!("{k}: ")).unwrap_or_default();
    (location, format!("{key}{message} (fix the TOML; see examples/belfry.toml)"))
}

/// Whether the last part of `key` names a duration setting.
fn is_duration_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.ends_with("_wait") || last.ends_with("_interval") || last.ends_with("_timeout") || last.ends_with("_ttl") || last == "for"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Isolation, Profiler};

    const MINIMAL: &str = r#"
        [plugins.webhook]
        path = "webhook.wasm"

        [[receivers]]
        name = "ops"
        plugin = "webhook"
        config = { url = "http://127.0.0.1:1/" }

        [route]
        receiver = "ops"
    "#;

    #[test]
    fn a_toml_error_names_the_key_at_fault_and_its_line() {
        let cases = [
            ("repeat_interval = 4", "line 12", "route.repeat_interval: invalid type: integer `4`, expected a duration"),
            ("group_wait = \"1 fortnight\"", "line 12", "route.group_wait: "),
            ("receiver = \"again\"", "line 12", "receiver"),
        ];
        for (extra, line, needle) in cases {
            let text = format!("{MINIMAL}        {extra}\n");
            let (location, message) = Config::parse(&text).map(|_| ()).unwrap_err();
            assert_eq!(location, line, "{extra}: {message}");
            assert!(message.contains(needle), "{extra}: {message}");
        }
        let (_, message) = Config::parse(&format!("{MINIMAL}        group_wait = \"1 fortnight\"\n")).map(|_| ()).unwrap_err();
        assert!(message.contains(r#"like "30s""#), "{message}");
        let (_, message) = Config::parse(&format!("{MINIMAL}        receiver = \"again\"\n")).map(|_| ()).unwrap_err();
        assert!(message.contains("duplicate key"), "{message}");
    }

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("belfry.toml");
        std::fs::write(&file, text).unwrap();
        Config::load(&file)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.server.listen, std::net::SocketAddr::from(([127, 0, 0, 1], 9093)));
        assert_eq!(c.runtime.isolation, Isolation::PerReceiver);
        assert_eq!(c.runtime.limits, Limits::default());
        assert!(c.resolve(Path::new("webhook.wasm")).ends_with("webhook.wasm"));
    }

    #[test]
    fn the_profiler_is_off_unless_asked_for_and_a_bad_one_is_named() {
        assert_eq!(load(MINIMAL).unwrap().runtime.profiler, Profiler::None);
        let with = |value: &str| MINIMAL.replace("[route]", &format!("[runtime]\nprofiler = \"{value}\"\n\n[route]"));
        assert_eq!(load(&with("perfmap")).unwrap().runtime.profiler, Profiler::Perfmap);
        let err = load(&with("vtune")).unwrap_err().to_string();
        assert!(err.contains("belfry.toml:11") && err.contains("unknown variant `vtune`") && err.contains("perfmap"), "{err}");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = load(&MINIMAL.replace("[route]", "[route]\nrecevier = \"x\"")).unwrap_err().to_string();
        assert!(err.contains("belfry.toml:11: route.recevier: unknown field"), "{err}"); // the line and the bad key
        assert!(err.contains("recevier"), "{err}");
    }

    #[test]
    fn unknown_plugin_and_missing_receiver_are_both_reported() {
        let text = MINIMAL.replace("plugin = \"webhook\"", "plugin = \"slak\"").replace("receiver = \"ops\"", "receiver = \"nobody\"");
        let err = load(&text).unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["receivers[0].plugin", "route.receiver"]);
        assert!(err.0[0].message.contains("[plugins.slak]"));
    }

    #[test]
    fn bad_allowed_host_is_rejected() {
        let text = MINIMAL.replace("plugin = \"webhook\"", "plugin = \"webhook\"\nallowed_hosts = [\"http://x/\"]");
        let err = load(&text).unwrap_err();
        assert_eq!(err.0[0].key, "receivers[0].allowed_hosts[0]");
    }

    #[test]
    fn fallback_must_exist_and_not_loop() {
        let two = |a: &str, b: &str| {
            format!(
                "[plugins.webhook]\npath = \"w.wasm\"\n[[receivers]]\nname = \"a\"\nplugin = \"webhook\"\n{a}\n\
                 [[receivers]]\nname = \"b\"\nplugin = \"webhook\"\n{b}\n[route]\nreceiver = \"a\"\n"
            )
        };
        assert!(load(&two("fallback = \"b\"", "")).is_ok());
        let err = load(&two("fallback = \"c\"", "")).unwrap_err();
        assert_eq!(err.0[0].key, "receivers[0].fallback");
        assert!(err.0[0].message.contains("`c`"), "{err}");
        let err = load(&two("fallback = \"b\"", "fallback = \"a\"")).unwrap_err();
        assert!(err.0[0].message.contains("a -> b -> a"), "{err}");
        let err = load(&two("retry = { max_attempts = 0 }", "")).unwrap_err();
        assert_eq!(err.0[0].key, "receivers[0].retry.max_attempts");
        let err = load(&two("rate_limit = { messages = 0 }", "")).unwrap_err();
        assert_eq!(err.0[0].key, "receivers[0].rate_limit");
    }

    #[test]
    fn keys_are_located_on_their_lines() {
        let text = "[server]\nlisten = \"x\"\n\n[[receivers]]\nname = \"a\"\n\n[[receivers]]\nname = \"b\"\nconfig = { url = \"u\" }\n";
        assert_eq!(line_of_key(text, "server.listen"), Some(2));
        assert_eq!(line_of_key(text, "receivers[1].config.url"), Some(9));
        assert_eq!(line_of_key(text, "receivers[1].name"), Some(8));
        assert_eq!(line_of_key(text, "receivers[1].nothing"), Some(7), "the deepest part that exists");
        assert_eq!(line_of_key(text, "route.receiver"), None);
        let err = load(&MINIMAL.replace("receiver = \"ops\"", "receiver = \"nobody\"")).unwrap_err().to_string();
        assert!(err.contains("belfry.toml:11: route.receiver: no receiver is named `nobody`"), "{err}");
    }

    #[test]
    fn missing_file_says_so() {
        let err = Config::load(Path::new("/nonexistent/belfry.toml")).unwrap_err().to_string();
        assert!(err.contains("cannot read the config file"), "{err}");
    }
}
