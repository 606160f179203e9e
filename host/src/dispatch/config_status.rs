//! What a tenant sees of its own configuration: the routing script that routes its alerts, and the last change that was refused.

/// What a tenant can see of its own configuration (`GET /api/belfry/v1/status`): which
/// routing script routes its alerts, since when and after how many self-tests, and the last
/// change that was refused, with its `file:line` error. Kept across reloads.
#[derive(Debug)]
pub struct ConfigStatus {
    /// The tenant's configuration file (its tenant.toml, or the main file for `default`).
    file: std::path::PathBuf,
    /// Whether that is the main file, whose directory holds the other tenants' too.
    main_file: bool,
    inner: std::sync::Mutex<ConfigStatusInner>,
}

#[derive(Debug, Default)]
struct ConfigStatusInner {
    live: Option<Live>,
    last_rejection: Option<Rejection>,
}

/// The configuration that routes a tenant's alerts now.
#[derive(Debug, Clone)]
struct Live {
    at: chrono::DateTime<chrono::Utc>,
    by: String,
    script: Option<std::path::PathBuf>,
    self_tests: usize,
}

/// A change that was refused; the previous configuration kept running.
#[derive(Debug, Clone)]
struct Rejection {
    at: chrono::DateTime<chrono::Utc>,
    by: String,
    error: String,
}

impl ConfigStatus {
    /// The status of the tenant configured in `file` (`main_file`: the top-level config).
    pub fn for_file(file: &std::path::Path, main_file: bool) -> ConfigStatus {
        ConfigStatus { file: file.to_path_buf(), main_file, inner: Default::default() }
    }

    /// Whether `file` is one of this tenant's (its tenant.toml, script, templates): problems in
    /// it are shown to the tenant.
    pub fn owns(&self, file: &std::path::Path) -> bool {
        let Some(dir) = self.file.parent() else { return false };
        if self.main_file { file == self.file || file.parent() == Some(dir) } else { file.starts_with(dir) }
    }

    /// `router` went live at `at`; `by` says what loaded it (`start`, `sighup`, `api`, `file-watcher`).
    pub fn went_live(&self, router: &crate::route::Router, by: &str, at: chrono::DateTime<chrono::Utc>) {
        let live = Live {
            at,
            by: by.to_string(),
            script: router.script_file().map(std::path::Path::to_path_buf),
            self_tests: router.self_tests(),
        };
        self.inner.lock().expect("config status lock").live = Some(live);
    }

    /// A change was refused at `at` with `error` (the `file:line: ...` the operator log has).
    pub fn rejected(&self, error: &str, by: &str, at: chrono::DateTime<chrono::Utc>) {
        let rejection = Rejection { at, by: by.to_string(), error: error.to_string() };
        self.inner.lock().expect("config status lock").last_rejection = Some(rejection);
    }

    /// As the API shows it: `script` (file, loaded at, by, self-tests passed) and
    /// `lastRejection` (at, by, error), or null. A rejection older than the live
    /// configuration is still shown: it says what was tried and refused.
    pub fn to_json(&self) -> serde_json::Value {
        let inner = self.inner.lock().expect("config status lock");
        let live = inner.live.as_ref().map(|l| {
            serde_json::json!({
                "file": l.script.as_ref().map(|p| p.display().to_string()),
                "loadedAt": crate::alert::format_time(l.at),
                "loadedBy": l.by,
                "selfTestsPassed": l.self_tests,
            })
        });
        let rejection = inner.last_rejection.as_ref().map(|r| {
            serde_json::json!({
                "at": crate::alert::format_time(r.at),
                "by": r.by,
                "error": r.error,
                "current": inner.live.as_ref().is_none_or(|l| r.at >= l.at),
            })
        });
        serde_json::json!({ "routing": live, "lastRejection": rejection })
    }
}
