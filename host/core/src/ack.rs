//! Acknowledgement: someone is on it. A group's ack, and the signed links that let a chat button or an email ack one group without an API token.
//!
//! An ack stops a group's repeat notifications (and, once escalation policies run, its
//! escalation) until an alert it did not cover fires, which re-triggers the group, or every
//! alert resolves, which ends it. It is stored, so it survives restarts.
//!
//! An ack link is a capability URL, as PagerDuty's and Opsgenie's emails carry: it names one
//! tenant and one group, expires, and is signed with HMAC-SHA256 under a key kept in the store.
//! Opening it (GET) shows a confirmation page; only its form's POST acknowledges, so link
//! previews and mail scanners that fetch URLs ack nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A group's acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Who acknowledged: the API's `ackedBy`, or the name given on an acknowledge link's page.
    pub by: String,
    /// Why, or what they are doing about it; may be empty.
    pub comment: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The alerts (fingerprints, sorted) the ack covers: those in the group when it was acked.
    /// Another one firing re-triggers the group.
    pub covers: Vec<u64>,
}

/// The path ack links live under.
pub const LINK_PATH: &str = "/api/belfry/v1/ack/";

/// Signs and checks ack links.
pub struct AckLinks {
    key: ring::hmac::Key,
    /// How long a link works after its notification was sent.
    pub ttl: std::time::Duration,
}

/// Why an ack link does not work.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a token Belfry made (truncated, edited, or signed with another store's key).
    #[error("this acknowledgement link is not valid (was it copied whole?)")]
    Invalid,
    /// Older than its time to live.
    #[error("this acknowledgement link expired on {0}; acknowledge from the API or a newer notification")]
    Expired(DateTime<Utc>),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// Tenant.
    t: String,
    /// Group key.
    g: String,
    /// Expiry, Unix seconds.
    e: i64,
}

impl AckLinks {
    /// Links signed with `secret` (32 random bytes from the store), valid for `ttl`.
    pub fn new(secret: &[u8], ttl: std::time::Duration) -> AckLinks {
        AckLinks { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), ttl }
    }

    /// A fresh random secret for [`AckLinks::new`].
    pub fn generate_secret() -> Vec<u8> {
        use ring::rand::SecureRandom;
        let mut secret = vec![0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut secret).expect("the system's random source");
        secret
    }

    /// The link acking `group` of `tenant`, under `external_url`, valid from `now` for the TTL.
    pub fn link(&self, external_url: &str, tenant: &str, group: &str, now: DateTime<Utc>) -> String {
        let expires = now + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::days(7));
        let claims = Claims { t: tenant.to_string(), g: group.to_string(), e: expires.timestamp() };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims encode"));
        let tag = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&self.key, payload.as_bytes()).as_ref());
        format!("{}{LINK_PATH}{payload}.{tag}", external_url.trim_end_matches('/'))
    }

    /// The (tenant, group) a token from a link names, if its signature holds and it has not expired.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<(String, String), LinkError> {
        let (payload, tag) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| LinkError::Invalid)?;
        ring::hmac::verify(&self.key, payload.as_bytes(), &tag).map_err(|_| LinkError::Invalid)?;
        let claims: Claims =
            URL_SAFE_NO_PAD.decode(payload).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(LinkError::Invalid)?;
        let expires = DateTime::from_timestamp(claims.e, 0).ok_or(LinkError::Invalid)?;
        if expires < now {
            return Err(LinkError::Expired(expires));
        }
        Ok((claims.t, claims.g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-24T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_link_names_its_tenant_and_group_until_it_expires() {
        let links = AckLinks::new(&[7; 32], std::time::Duration::from_secs(3600));
        let link = links.link("https://belfry.example.com/", "team-a", "ops/alertname:{alertname=\"Disk\"}", now());
        let token = link.strip_prefix("https://belfry.example.com/api/belfry/v1/ack/").expect("under the external URL");
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "URL-safe: {token}");
        assert_eq!(links.verify(token, now()), Ok(("team-a".into(), "ops/alertname:{alertname=\"Disk\"}".into())));
        assert!(matches!(links.verify(token, now() + chrono::Duration::hours(2)), Err(LinkError::Expired(_))));
    }

    #[test]
    fn an_edited_or_foreign_link_is_refused() {
        let links = AckLinks::new(&[7; 32], std::time::Duration::from_secs(3600));
        let link = links.link("http://b", "team-a", "g", now());
        let token = link.rsplit('/').next().unwrap();
        let (payload, tag) = token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"t":"team-b","g":"g","e":9999999999}"#);
        assert_eq!(links.verify(&format!("{forged}.{tag}"), now()), Err(LinkError::Invalid));
        assert_eq!(links.verify(payload, now()), Err(LinkError::Invalid));
        let other = AckLinks::new(&[8; 32], std::time::Duration::from_secs(3600));
        assert_eq!(other.verify(token, now()), Err(LinkError::Invalid));
    }
}
