//! Building a tenant's parts from its configuration: plugins loaded, receivers bound to them (each validating its config), the routing script compiled and self-tested; each problem located.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, ConfigError, TenantView};
use crate::plugin::{BindError, HostPattern, Plugin, ReceiverSpec, Runtime};
use crate::route::Router;

/// Load every plugin the configuration names (checking pins); a failure is a problem of its
/// `plugins.<name>.path`.
pub(super) async fn load_plugins(runtime: &Runtime, config: &Config, errors: &mut Vec<ConfigError>) -> HashMap<String, Arc<Plugin>> {
    let problem =
        |name: &str, message: String| ConfigError { line: None, file: config.file.clone(), key: format!("plugins.{name}.path"), message };
    let loaded =
        futures_util::future::join_all(config.plugins.iter().map(|(name, source)| async move {
            (name, runtime.load(name, &config.resolve(&source.path), source.sha256.as_deref()).await)
        }))
        .await;
    let mut plugins = HashMap::new();
    for (name, result) in loaded {
        match result {
            // A plugin that names itself after another entry would have its work read as that one's.
            Ok(plugin) if plugin.info.name != *name && config.plugins.contains_key(&plugin.info.name) => errors.push(problem(
                name,
                format!(
                    "the component describes itself as `{}`, the name of another [plugins] entry; refusing it (check that the path points at the plugin you meant)",
                    plugin.info.name
                ),
            )),
            Ok(plugin) => {
                tracing::info!(plugin = %name, describes_itself_as = %plugin.info.name, version = %plugin.info.version, sha256 = %plugin.sha256, source = ?plugin.source, load_ms = plugin.load_time.as_secs_f64() * 1e3, "plugin loaded");
                plugins.insert(name.clone(), plugin);
            }
            Err(e) => errors.push(problem(name, e.to_string())),
        }
    }
    plugins
}

/// Bind the tenant's receiver `i` to its plugin, which validates its config; each field the
/// plugin rejects is a problem of `receivers[i].config.<field>`.
pub(super) async fn bind_receiver(
    view: &TenantView<'_>,
    config: &Config,
    plugins: &HashMap<String, Arc<Plugin>>,
    i: usize,
    capture: Option<crate::plugin::Capture>,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::plugin::Receiver> {
    let r = &view.receivers[i];
    let plugin = plugins.get(&r.plugin)?;
    let mut error = |key: String, message: String| errors.push(ConfigError { line: None, file: view.file.to_path_buf(), key, message });
    let smtp = match (&r.smtp, plugin.sends_mail()) {
        (Some(smtp), true) => {
            let ca = smtp.ca_file.as_ref().and_then(|path| std::fs::read(config.resolve(path)).ok());
            match crate::plugin::Mailer::new(&r.name, smtp, ca.as_deref(), capture.clone()) {
                Ok(mailer) => Some(mailer),
                Err(why) => {
                    error(format!("receivers[{i}].smtp"), why);
                    return None;
                }
            }
        }
        (None, false) => None,
        (None, true) => {
            let message = format!(
                "plugin `{}` sends mail through the host: give receiver `{}` an [receivers.smtp] table with the server's smarthost",
                r.plugin, r.name
            );
            error(format!("receivers[{i}].smtp"), message);
            return None;
        }
        (Some(_), false) => {
            let message =
                format!("plugin `{}` does not send mail, so receiver `{}` needs no SMTP grant; remove [receivers.smtp]", r.plugin, r.name);
            error(format!("receivers[{i}].smtp"), message);
            return None;
        }
    };
    let spec = ReceiverSpec {
        tenant: view.name.to_string(),
        name: r.name.clone(),
        config: r.config.clone(),
        allowed_hosts: r.allowed_hosts.iter().filter_map(|h| HostPattern::parse(h).ok()).collect(),
        allow_private_addresses: r.allow_private_addresses,
        smtp,
        limits: r.limits.clone().unwrap_or_else(|| config.runtime.limits.clone()),
        isolation: config.runtime.isolation,
        max_in_flight: config.runtime.max_in_flight_per_receiver,
        secrets: r.secrets.clone(),
        capture,
    };
    match plugin.bind(spec).await {
        Ok(receiver) => return Some(receiver),
        Err(BindError::Config(problems)) => {
            for p in problems {
                let key = if p.field.is_empty() { format!("receivers[{i}].config") } else { format!("receivers[{i}].config.{}", p.field) };
                error(key, format!("{} (receiver `{}`, plugin `{}`)", p.message, r.name, r.plugin));
            }
        }
        Err(BindError::Plugin(failure)) => {
            error(format!("receivers[{i}]"), format!("plugin `{}` failed while validating receiver `{}`: {failure}", r.plugin, r.name))
        }
    }
    None
}

/// Compile the tenant's routing script and run its self-tests; a failure is a problem at the
/// script's line.
pub(super) fn build_router(view: &TenantView<'_>, errors: &mut Vec<ConfigError>) -> Option<Router> {
    let spec = view.router_spec();
    // A script that cannot be read is a problem of the key that names it.
    if let Some(script) = &spec.script
        && let Err(e) = std::fs::metadata(script)
    {
        let message = format!("cannot read the routing script {}: {e} (tenant `{}`)", script.display(), view.name);
        errors.push(ConfigError { line: None, file: view.file.to_path_buf(), key: "route.script".into(), message });
        return None;
    }
    match Router::build(spec) {
        Ok(router) => Some(router),
        Err(e) => {
            let key = e.line.map_or("-".to_string(), |l| format!("line {l}"));
            errors.push(ConfigError { line: None, file: e.file, key, message: format!("{} (tenant `{}`)", e.message, view.name) });
            None
        }
    }
}
