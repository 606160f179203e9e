//! A routing script compiled once: its AST in its own sandboxed engine, what it reads of an alert, and the receiver names it spells out; or why it cannot go live.

use super::sandbox::sandboxed_engine;
use rhai::AST;
use rhai::Engine;
use std::path::Path;
use std::path::PathBuf;

/// A script that cannot go live: where and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ScriptError {
    /// The script.
    pub file: PathBuf,
    /// The line at fault, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

pub(super) struct Script {
    pub(super) file: PathBuf,
    pub(super) engine: Engine,
    pub(super) ast: AST,
    /// Alert fields the script's text names; the others are not computed per alert.
    pub(super) uses: Uses,
    /// The receiver names it spells out where `route()` returns them, with their lines.
    pub(super) literal_receivers: Vec<(String, Option<usize>)>,
}

/// Which of the costlier alert fields a script can read (a conservative text search).
#[derive(Clone, Copy)]
pub(super) struct Uses {
    pub(super) annotations: bool,
    pub(super) starts_at: bool,
    pub(super) fingerprint: bool,
}

impl Script {
    pub(super) fn compile(file: &Path, text: &str) -> Result<Script, ScriptError> {
        let engine = sandboxed_engine(file);
        let ast = engine.compile(text).map_err(|e| ScriptError {
            file: file.to_path_buf(),
            line: e.1.line(),
            message: format!("does not compile: {}", e.0),
        })?;
        if !ast.iter_functions().any(|f| f.name == "route" && f.params.len() == 1) {
            return Err(ScriptError {
                file: file.to_path_buf(),
                line: None,
                message: "defines no `fn route(alert)`; the script must define it and return where the alert goes".into(),
            });
        }
        // A script can only read a field it names (there is no `eval` to build the name).
        let uses = Uses {
            annotations: text.contains("annotations"),
            starts_at: text.contains("starts_at"),
            fingerprint: text.contains("fingerprint"),
        };
        // Both checks read one unoptimized AST (the optimizer folds literals away).
        let unoptimized = super::check::unoptimized(text);
        if let Some((field, at)) = unoptimized.as_ref().and_then(super::check::unknown_alert_field) {
            return Err(ScriptError {
                file: file.to_path_buf(),
                line: at.line(),
                message: format!(
                    "reads `{field}`, which no alert has (an alert has {}); a field that does not exist reads as () on every alert",
                    super::check::ALERT_FIELDS.join(", ")
                ),
            });
        }
        let literal_receivers = unoptimized
            .as_ref()
            .map(super::check::literal_receivers)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, at)| (name, at.line()))
            .collect();
        Ok(Script { file: file.to_path_buf(), engine, ast, uses, literal_receivers })
    }
}
