//! A problem with the configuration, located: the file, the key at fault and its line, and what to do.

use std::fmt;
use std::path::PathBuf;

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
