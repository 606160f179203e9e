//! Typed access to a receiver's configuration that doubles as the plugin's schema.

use crate::{ConfigError, ConfigField, ConfigValue, FieldKind};

/// A receiver's configuration, read field by field.
///
/// Every getter declares a field (name, type, required, secret, description) and returns
/// its value. Problems are collected, not returned, so that `validate-config` reports every
/// bad field at once; getters return a placeholder (empty string, default) for bad fields.
pub struct Config {
    values: Vec<(String, ConfigValue)>,
    /// Which of `values` a getter has read.
    read: Vec<bool>,
    /// The declared fields, only while describing: every delivery reads the configuration
    /// again, and copying each field's description there cost the call more than the rest of
    /// the decoding.
    schema: Vec<ConfigField>,
    /// The declared fields' names, `, `-separated, for the unknown-field message.
    declared: String,
    errors: Vec<ConfigError>,
    /// Only collecting the schema (`describe`): no values, so nothing is "missing".
    describing: bool,
}

impl Config {
    pub(crate) fn new(values: Vec<(String, ConfigValue)>) -> Self {
        let read = vec![false; values.len()];
        Config { values, read, schema: Vec::new(), declared: String::new(), errors: Vec::new(), describing: false }
    }

    pub(crate) fn schema_only() -> Self {
        Config { describing: true, ..Self::new(Vec::new()) }
    }

    pub(crate) fn into_schema(self) -> Vec<ConfigField> {
        self.schema
    }

    /// Every problem found; also rejects fields no getter declared (likely typos).
    pub(crate) fn finish(mut self) -> Result<(), Vec<ConfigError>> {
        for ((name, _), read) in self.values.iter().zip(&self.read) {
            if !read {
                self.errors
                    .push(ConfigError { field: name.clone(), message: format!("unknown field; this plugin reads: {}", self.declared) });
            }
        }
        if self.errors.is_empty() { Ok(()) } else { Err(self.errors) }
    }

    /// Record a problem that no single getter can see (e.g. two fields that exclude each other).
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError { field: field.to_string(), message: message.into() });
    }

    fn declare(&mut self, name: &str, kind: FieldKind, required: bool, secret: bool, description: &str) -> Option<ConfigValue> {
        if self.describing {
            self.schema.push(ConfigField { name: name.to_string(), kind, required, secret, description: description.to_string() });
        }
        if !self.declared.is_empty() {
            self.declared.push_str(", ");
        }
        self.declared.push_str(name);
        let position = self.values.iter().position(|(n, _)| n == name);
        let value = position.map(|i| {
            self.read[i] = true;
            self.values[i].1.clone()
        });
        if value.is_none() && required && !self.describing {
            self.error(name, "required field is missing");
        }
        value
    }

    fn wrong_type(&mut self, name: &str, expected: &str) {
        self.error(name, format!("must be {expected}"));
    }

    fn text_field(&mut self, name: &str, required: bool, secret: bool, description: &str) -> Option<String> {
        match self.declare(name, FieldKind::Text, required, secret, description)? {
            ConfigValue::Text(s) if required && s.is_empty() => {
                self.error(name, "must not be empty");
                None
            }
            ConfigValue::Text(s) => Some(s),
            _ => {
                self.wrong_type(name, "a string");
                None
            }
        }
    }

    /// A required, non-empty string.
    pub fn text(&mut self, name: &str, description: &str) -> String {
        self.text_field(name, true, false, description).unwrap_or_default()
    }

    /// An optional string.
    pub fn optional_text(&mut self, name: &str, description: &str) -> Option<String> {
        self.text_field(name, false, false, description)
    }

    /// An optional secret string: never logged or shown by the host.
    pub fn secret(&mut self, name: &str, description: &str) -> Option<String> {
        self.text_field(name, false, true, description)
    }

    /// A required secret string.
    pub fn required_secret(&mut self, name: &str, description: &str) -> String {
        self.text_field(name, true, true, description).unwrap_or_default()
    }

    /// A required absolute `http://` or `https://` URL.
    pub fn url(&mut self, name: &str, description: &str) -> String {
        let value = match self.declare(name, FieldKind::Url, true, false, description) {
            Some(ConfigValue::Text(s)) => s,
            Some(_) => {
                self.wrong_type(name, "a URL string");
                return String::new();
            }
            None => return String::new(),
        };
        match check_url(&value) {
            Ok(()) => value,
            Err(why) => {
                self.error(name, format!("`{value}` is not a valid URL: {why}"));
                String::new()
            }
        }
    }

    /// An optional absolute `http://` or `https://` URL, `default` when absent (an API base a
    /// test points at a stand-in).
    pub fn url_or(&mut self, name: &str, default: &str, description: &str) -> String {
        let value = match self.declare(name, FieldKind::Url, false, false, description) {
            None => return default.to_string(),
            Some(ConfigValue::Text(s)) => s,
            Some(_) => {
                self.wrong_type(name, "a URL string");
                return default.to_string();
            }
        };
        if let Err(why) = check_url(&value) {
            self.error(name, format!("`{value}` is not a valid URL: {why}"));
        }
        value
    }

    /// An optional secret holding an absolute http(s) URL (a webhook URL is its own
    /// credential); `None` when absent or empty. The error never shows the value.
    pub fn secret_url(&mut self, name: &str, description: &str) -> Option<String> {
        self.secret_url_field(name, false, description)
    }

    /// A required secret holding an absolute http(s) URL: a channel reached through a webhook
    /// URL alone (Discord, Teams). `plugin inspect` lists it required; the error never shows
    /// the value.
    pub fn required_secret_url(&mut self, name: &str, description: &str) -> String {
        self.secret_url_field(name, true, description).unwrap_or_default()
    }

    fn secret_url_field(&mut self, name: &str, required: bool, description: &str) -> Option<String> {
        // Typed `url` in the schema, so the host checks its host against `allowed_hosts`.
        let value = match self.declare(name, FieldKind::Url, required, true, description)? {
            ConfigValue::Text(s) if s.is_empty() => {
                if required {
                    self.error(name, "must not be empty");
                }
                return None;
            }
            ConfigValue::Text(s) => s,
            _ => {
                self.wrong_type(name, "a URL string");
                return None;
            }
        };
        if let Err(why) = check_url(&value) {
            self.error(name, format!("must be an http(s) URL: {why}"));
        }
        Some(value)
    }

    /// An optional whole number, `default` when absent; must lie in `range`.
    pub fn integer_or(&mut self, name: &str, default: i64, range: std::ops::RangeInclusive<i64>, description: &str) -> i64 {
        match self.declare(name, FieldKind::Integer, false, false, description) {
            None => default,
            Some(ConfigValue::Integer(n)) if range.contains(&n) => n,
            Some(ConfigValue::Integer(n)) => {
                self.error(name, format!("{n} is out of range {}..={}", range.start(), range.end()));
                default
            }
            Some(_) => {
                self.wrong_type(name, "a whole number");
                default
            }
        }
    }

    /// An optional boolean, `default` when absent.
    pub fn boolean_or(&mut self, name: &str, default: bool, description: &str) -> bool {
        match self.declare(name, FieldKind::Boolean, false, false, description) {
            None => default,
            Some(ConfigValue::Boolean(b)) => b,
            Some(_) => {
                self.wrong_type(name, "true or false");
                default
            }
        }
    }

    /// An optional list of strings, empty when absent.
    pub fn text_list(&mut self, name: &str, description: &str) -> Vec<String> {
        match self.declare(name, FieldKind::TextList, false, false, description) {
            None => Vec::new(),
            Some(ConfigValue::TextList(v)) => v,
            Some(_) => {
                self.wrong_type(name, "a list of strings");
                Vec::new()
            }
        }
    }

    /// An optional map of strings (sorted by key), empty when absent. With `secret`, the
    /// values are secrets (e.g. headers that carry credentials).
    pub fn text_map(&mut self, name: &str, secret: bool, description: &str) -> Vec<(String, String)> {
        match self.declare(name, FieldKind::TextMap, false, secret, description) {
            None => Vec::new(),
            Some(ConfigValue::TextMap(v)) => v,
            Some(_) => {
                self.wrong_type(name, "a table of strings");
                Vec::new()
            }
        }
    }
}

/// Accepts absolute http(s) URLs with a host; the host re-checks and allow-lists at send time.
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or("it must start with http:// or https://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err("it has no host");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains white space or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(values: &[(&str, ConfigValue)]) -> Config {
        Config::new(values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    #[test]
    fn every_bad_field_is_reported_with_its_name() {
        let mut c = cfg(&[
            ("url", ConfigValue::Text("ftp://x".into())),
            ("max", ConfigValue::Text("ten".into())),
            ("typo", ConfigValue::Boolean(true)),
        ]);
        c.url("url", "");
        c.integer_or("max", 0, 0..=10, "");
        c.text("name", "");
        let errors = c.finish().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["url", "max", "name", "typo"]);
        assert!(errors[0].message.contains("http://"));
        assert!(errors[2].message.contains("missing"));
        assert_eq!(errors[3].message, "unknown field; this plugin reads: url, max, name");
    }

    #[test]
    fn decoding_a_configuration_builds_no_schema() {
        let mut c = cfg(&[("url", ConfigValue::Text("https://example.com/hook".into()))]);
        assert_eq!(c.url("url", "Where to send"), "https://example.com/hook");
        assert!(c.schema.is_empty(), "only describe needs the schema; deliveries skip copying it");
        assert!(c.finish().is_ok());
    }

    #[test]
    fn optional_urls_default_and_secret_urls_never_show_their_value() {
        let mut c = cfg(&[("hook", ConfigValue::Text("hooks.example.com/T0/s3cret-path".into()))]);
        assert_eq!(c.url_or("api_url", "https://api.example.com", ""), "https://api.example.com");
        assert_eq!(c.secret_url("hook", "").as_deref(), Some("hooks.example.com/T0/s3cret-path"));
        assert_eq!(c.secret_url("absent", ""), None);
        let errors = c.finish().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "hook");
        assert!(errors[0].message.contains("http(s)") && !errors[0].message.contains("s3cret"), "{}", errors[0].message);
        let mut c = cfg(&[("api_url", ConfigValue::Text("ftp://x".into()))]);
        c.url_or("api_url", "https://api.example.com", "");
        assert_eq!(c.finish().unwrap_err()[0].field, "api_url");
    }

    #[test]
    fn a_required_secret_url_is_typed_url_required_and_secret() {
        let mut c = Config::schema_only();
        c.required_secret_url("webhook_url", "hook");
        let field = &c.into_schema()[0];
        assert!(matches!(field.kind, FieldKind::Url) && field.required && field.secret);
        let mut c = cfg(&[]);
        assert_eq!(c.required_secret_url("webhook_url", ""), "");
        assert_eq!(c.finish().unwrap_err()[0].message, "required field is missing");
        let mut c = cfg(&[("webhook_url", ConfigValue::Text(String::new()))]);
        c.required_secret_url("webhook_url", "");
        assert_eq!(c.finish().unwrap_err()[0].message, "must not be empty");
    }

    #[test]
    fn schema_lists_fields_with_secret_flags() {
        let mut c = Config::schema_only();
        c.url("url", "target");
        c.secret("token", "bearer");
        let schema = c.into_schema();
        assert_eq!(schema.len(), 2);
        assert!(schema[0].required && !schema[0].secret);
        assert!(!schema[1].required && schema[1].secret);
    }

    #[test]
    fn urls_need_scheme_and_host() {
        assert!(check_url("https://hooks.example.com/x").is_ok());
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("http:///path").is_err());
        assert!(check_url("hooks.example.com").is_err());
        assert!(check_url("http://a b").is_err());
    }
}
