//! Tenants: who a request acts for (an API token, or `X-Scope-OrgID` behind a trusted proxy), and what each tenant owns.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::HeaderMap;
use subtle::ConstantTimeEq;

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

/// The tenant the top-level `[[receivers]]` and `[route]` define.
pub const DEFAULT_TENANT: &str = "default";

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
