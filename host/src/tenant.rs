//! Tenants: who a request acts for (an API token, or `X-Scope-OrgID` behind a trusted proxy), and what each tenant owns.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::DEFAULT_TENANT;
use crate::dispatch::Notifier;

/// One tenant: its name, its token hashes, and its alerts, routing and receivers.
pub struct Tenant {
    /// The tenant's name.
    pub name: String,
    token_hashes: Vec<[u8; 32]>,
    /// Its alert state, routing and delivery.
    pub notifier: Arc<Notifier>,
}

impl Tenant {
    /// A tenant with the given token hashes (SHA-256 of each token).
    pub fn new(name: String, token_hashes: Vec<[u8; 32]>, notifier: Arc<Notifier>) -> Tenant {
        Tenant { name, token_hashes, notifier }
    }
}

/// Why a request has no tenant. Messages never say which tenants exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, and no open default tenant.
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    Missing,
    /// A token that matches no tenant.
    #[error("the token is not valid")]
    BadToken,
    /// An `X-Scope-OrgID` naming no tenant (trusted-proxy listeners only).
    #[error("the tenant in X-Scope-OrgID is not known")]
    UnknownTenant,
}

/// Every tenant, and how requests are mapped to them. Replaced whole on reload.
pub struct Tenants {
    by_name: BTreeMap<String, Arc<Tenant>>,
    trust_scope_org_id: bool,
    admin_hashes: Vec<[u8; 32]>,
}

/// The SHA-256 of an API token, as stored in the configuration.
pub fn hash_token(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Whether `hash` equals any of `candidates`; every comparison runs, in constant time.
fn any_equal(hash: &[u8; 32], candidates: &[[u8; 32]]) -> bool {
    candidates.iter().fold(subtle::Choice::from(0), |found, c| found | c.ct_eq(hash)).into()
}

impl Tenants {
    /// The tenant set.
    pub fn new(tenants: Vec<Tenant>, trust_scope_org_id: bool, admin_hashes: Vec<[u8; 32]>) -> Tenants {
        let by_name = tenants.into_iter().map(|t| (t.name.clone(), Arc::new(t))).collect();
        Tenants { by_name, trust_scope_org_id, admin_hashes }
    }

    /// Every tenant, in name order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_name.values()
    }

    /// A tenant by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.by_name.get(name)
    }

    fn open_default(&self) -> Option<&Arc<Tenant>> {
        self.by_name.get(DEFAULT_TENANT).filter(|t| t.token_hashes.is_empty())
    }

    fn bearer(headers: &HeaderMap) -> Option<&str> {
        let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
    }

    /// The tenant a request acts for: `X-Scope-OrgID` on a trusted-proxy listener, else the
    /// bearer token's tenant, else the default tenant when it has no tokens.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Tenant>, AuthError> {
        if self.trust_scope_org_id
            && let Some(org) = headers.get("x-scope-orgid")
        {
            let name = org.to_str().map_err(|_| AuthError::UnknownTenant)?;
            return self.by_name.get(name.trim()).cloned().ok_or(AuthError::UnknownTenant);
        }
        if let Some(token) = Self::bearer(headers) {
            let hash = hash_token(token);
            // Check every tenant, without stopping at the first match, so timing says nothing.
            let mut found = None;
            for tenant in self.by_name.values() {
                if any_equal(&hash, &tenant.token_hashes) {
                    found = Some(tenant.clone());
                }
            }
            return found.ok_or(AuthError::BadToken);
        }
        self.open_default().cloned().ok_or(AuthError::Missing)
    }

    /// Whether the request may administer Belfry (reload, metrics): an admin token, or any request when
    /// no tenant uses tokens at all (a single-tenant setup, as open as Alertmanager's).
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        if let Some(token) = Self::bearer(headers) {
            return any_equal(&hash_token(token), &self.admin_hashes);
        }
        self.admin_hashes.is_empty() && self.by_name.values().all(|t| t.token_hashes.is_empty()) && !self.trust_scope_org_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_matches_sha256sum() {
        // printf 'secret' | sha256sum
        let hex: String = hash_token("secret").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b");
    }

    #[test]
    fn constant_time_lookup_finds_any_position() {
        let hashes = [hash_token("a"), hash_token("b"), hash_token("c")];
        assert!(any_equal(&hash_token("c"), &hashes));
        assert!(!any_equal(&hash_token("d"), &hashes));
        assert!(!any_equal(&hash_token("a"), &[]));
    }
}

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
