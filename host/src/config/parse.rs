//! TOML to typed configuration, reporting every key the schema refuses rather than the first: each is left out and the rest parsed again.

use super::errors::line_of_key;

/// Parse TOML text into `T`; an error comes back as (`line N`, message), the message led by
/// the key at fault (`route.repeat_interval: invalid type: integer 4, expected a duration`).
pub(super) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
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
pub(super) const MAX_KEYS_LEFT_OUT: usize = 64;

/// Parse TOML text into `T` and report every problem, not the first: a key the schema refuses
/// (unknown, of the wrong type, an invalid value) is reported and left out, and the rest is
/// parsed again, until it parses or a problem cannot be left out (a required key missing, an
/// item of a list: leaving it out would renumber the rest). `None` when it never parsed.
/// Problems are (location, message) as [`parse_toml`] gives them.
pub(super) fn parse_toml_all<T: serde::de::DeserializeOwned>(text: &str) -> (Option<T>, Vec<(String, String)>) {
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
pub(super) fn remove_key(table: &mut toml::Table, path: &str) -> bool {
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
pub(super) fn toml_problem(location: String, key: Option<String>, message: &str) -> (String, String) {
    let mut message = message.trim_end().to_string();
    if message.contains("expected a duration") || (message.starts_with("invalid value") && key.as_deref().is_some_and(is_duration_key)) {
        message.push_str(r#"; write a duration like "30s", "5m" or "4h""#);
    }
    let key = key.map(|k| format!("{k}: ")).unwrap_or_default();
    (location, format!("{key}{message} (fix the TOML; see examples/belfry.toml)"))
}

/// Whether the last part of `key` names a duration setting.
pub(super) fn is_duration_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.ends_with("_wait") || last.ends_with("_interval") || last.ends_with("_timeout") || last.ends_with("_ttl") || last == "for"
}
