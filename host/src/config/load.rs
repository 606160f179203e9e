//! Reading a configuration: the main file, every tenant's directory, the secret references; going on past every problem that leaves something to check.

use super::errors::ConfigError;
use super::errors::ConfigErrors;
use super::file::Config;
use super::file::ReceiverConfig;
use super::file::TenantConfig;
use super::file::TenantFile;
use super::file::check_tenant_name;
use super::parse::parse_toml_all;
use crate::tenant::DEFAULT_TENANT;
use std::path::Path;
use std::path::PathBuf;

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

    pub(super) fn load_with(file: &Path, local_tenant: Option<&Path>) -> (Option<Config>, ConfigErrors) {
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
        // The platform's copy of a tenant checked from its own directory is not read at all.
        let local = local_tenant.map(|dir| (dir, tenant_name_of(dir)));
        config.tenant_files = config.read_tenant_dirs(local.as_ref().map(|(_, name)| name.as_str()), &mut errors);
        if let Some((dir, name)) = local
            && let Some(tenant) = config.read_tenant(dir, name, &mut errors)
        {
            config.tenant_files.push(tenant);
        }
        config.resolve_secrets(&mut errors);
        config.check(&mut errors);
        (Some(config), ConfigErrors(errors).located())
    }

    /// Every `tenants/<name>/tenant.toml` but `except`'s, in name order, with each problem in
    /// `errors`; a tenant whose file does not parse is left out.
    pub(super) fn read_tenant_dirs(&self, except: Option<&str>, errors: &mut Vec<ConfigError>) -> Vec<TenantFile> {
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
            .filter(|n| !n.starts_with('.') && Some(n.as_str()) != except)
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
    pub(super) fn read_tenant(&self, dir: &Path, name: String, errors: &mut Vec<ConfigError>) -> Option<TenantFile> {
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

    /// Resolve the secret references in every receiver's `config`, in every file; each
    /// problem (in `errors`) names the field, never a secret.
    pub(super) fn resolve_secrets(&mut self, errors: &mut Vec<ConfigError>) {
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
}

/// The name of the tenant whose directory is `dir`: the directory's own name, wherever it is.
pub fn tenant_name_of(dir: &Path) -> String {
    dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default()
}
