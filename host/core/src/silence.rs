//! Silences per tenant with Alertmanager's semantics: validation, pending/active/expired, update in place or replace, expiry, garbage collection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::LabelSet;
use crate::matcher::{ApiMatcher, Matcher};
use crate::store::{Op, Table};

/// A silence as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    /// UUID.
    pub id: String,
    /// All must match for an alert to be silenced.
    pub matchers: Vec<ApiMatcher>,
    /// From when it mutes.
    pub starts_at: DateTime<Utc>,
    /// Until when it mutes.
    pub ends_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

/// Where a silence is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceState {
    /// Starts in the future.
    Pending,
    /// Muting now.
    Active,
    /// Over.
    Expired,
}

impl SilenceState {
    /// Alertmanager's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

impl Silence {
    /// Its state at `now`.
    pub fn state_at(&self, now: DateTime<Utc>) -> SilenceState {
        if self.ends_at <= now {
            SilenceState::Expired
        } else if self.starts_at > now {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }
}

/// `PostableSilence` of Alertmanager's API.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableSilence {
    /// Set to update an existing silence.
    #[serde(default)]
    pub id: Option<String>,
    /// Matchers.
    pub matchers: Vec<ApiMatcher>,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// Creator.
    pub created_by: String,
    /// Comment.
    pub comment: String,
}

/// Why a silence was refused: what to fix, and the HTTP status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceError {
    /// 400 for invalid input, 404 for an unknown id.
    pub status: u16,
    /// What is wrong.
    pub message: String,
}

fn invalid(message: impl Into<String>) -> SilenceError {
    SilenceError { status: 400, message: message.into() }
}

/// Compiled matchers of a silence, kept beside it for matching.
struct Compiled {
    silence: Silence,
    matchers: Vec<Matcher>,
}

/// One tenant's silences.
pub struct Silences {
    tenant: String,
    retention: Duration,
    by_id: Mutex<HashMap<String, Compiled>>,
}

/// Alertmanager's rule: a silence needs one matcher that does not match the empty string (an
/// absent label), or it would mute every alert that lacks the label: `env!="prod"` alone
/// matches all of them.
fn matches_empty(m: &Matcher) -> bool {
    m.matches(&LabelSet::new())
}

fn compile(matchers: &[ApiMatcher]) -> Result<Vec<Matcher>, SilenceError> {
    if matchers.is_empty() {
        return Err(invalid("matchers: at least one matcher is required"));
    }
    let compiled = matchers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if !crate::alert::is_valid_label_name(&m.name) {
                return Err(invalid(format!("matchers[{i}].name: `{}` is not a valid label name", m.name)));
            }
            m.to_matcher().map_err(|e| invalid(format!("matchers[{i}].value: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if compiled.iter().all(matches_empty) {
        return Err(invalid("matchers: at least one matcher must not match the empty string"));
    }
    Ok(compiled)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Silences {
    /// No silences yet for `tenant`; expired ones are dropped after `retention`.
    pub fn new(tenant: &str, retention: Duration) -> Silences {
        Silences { tenant: tenant.to_string(), retention, by_id: Mutex::new(HashMap::new()) }
    }

    /// Put back what the store had (entries that no longer compile are skipped, with a warning).
    pub fn restore(&self, silences: impl IntoIterator<Item = Silence>) {
        let mut by_id = self.lock();
        for s in silences {
            match compile(&s.matchers) {
                Ok(matchers) => {
                    by_id.insert(s.id.clone(), Compiled { silence: s, matchers });
                }
                Err(e) => tracing::warn!(tenant = %self.tenant, id = %s.id, error = %e.message, "skipping a stored silence"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Compiled>> {
        self.by_id.lock().expect("silences lock")
    }

    /// Create or update a silence, with Alertmanager's rules: the end must not be in the past
    /// nor before the start; an update keeps the id when only times and text change on a
    /// silence that has not expired (and an active one keeps its start), otherwise the old
    /// silence expires and a new one is created. Returns the id and the store writes.
    pub fn set(&self, p: PostableSilence, now: DateTime<Utc>, max_silences: usize) -> Result<(String, Vec<Op>), SilenceError> {
        let matchers = compile(&p.matchers)?;
        if p.ends_at < p.starts_at {
            return Err(invalid("endsAt: the end must not be before the start"));
        }
        if p.ends_at <= now {
            return Err(invalid("endsAt: the end can't be in the past"));
        }
        if p.created_by.trim().is_empty() {
            return Err(invalid("createdBy: say who creates the silence"));
        }
        if p.comment.trim().is_empty() {
            return Err(invalid("comment: say why the silence is needed"));
        }
        let mut by_id = self.lock();
        let mut ops = Vec::new();
        let mut id = new_id();
        if let Some(existing_id) = &p.id {
            let Some(prev) = by_id.get_mut(existing_id) else {
                return Err(SilenceError { status: 404, message: format!("silence {existing_id} not found") });
            };
            let state = prev.silence.state_at(now);
            let in_place = prev.silence.matchers == p.matchers
                && match state {
                    SilenceState::Expired => false,
                    SilenceState::Active => p.starts_at == prev.silence.starts_at,
                    SilenceState::Pending => p.starts_at >= now,
                };
            if in_place {
                id = existing_id.clone();
            } else if state != SilenceState::Expired {
                expire(&mut prev.silence, now);
                ops.push(Op::put(Table::Silences, &self.tenant, prev.silence.id.as_bytes(), &prev.silence));
            }
        }
        // A new silence cannot start in the past (Alertmanager moves it to now); an updated
        // active one keeps its start.
        let in_place = p.id.as_deref() == Some(id.as_str());
        if !in_place {
            let live = by_id.values().filter(|c| c.silence.state_at(now) != SilenceState::Expired).count();
            if live >= max_silences {
                return Err(SilenceError {
                    status: 429,
                    message: format!(
                        "the tenant has {live} pending or active silences; the limit is {max_silences} (max_silences): expire some or raise the limit"
                    ),
                });
            }
        }
        let starts_at = if in_place { p.starts_at } else { p.starts_at.max(now) };
        let silence = Silence {
            id: id.clone(),
            matchers: p.matchers,
            starts_at,
            ends_at: p.ends_at,
            updated_at: now,
            created_by: p.created_by,
            comment: p.comment,
        };
        ops.push(Op::put(Table::Silences, &self.tenant, silence.id.as_bytes(), &silence));
        by_id.insert(id.clone(), Compiled { silence, matchers });
        Ok((id, ops))
    }

    /// Expire a silence now (Alertmanager's DELETE). Expiring an expired silence is an error.
    pub fn expire(&self, id: &str, now: DateTime<Utc>) -> Result<Vec<Op>, SilenceError> {
        let mut by_id = self.lock();
        let Some(c) = by_id.get_mut(id) else {
            return Err(SilenceError { status: 404, message: format!("silence {id} not found") });
        };
        if c.silence.state_at(now) == SilenceState::Expired {
            return Err(invalid(format!("silence {id} has already expired")));
        }
        expire(&mut c.silence, now);
        Ok(vec![Op::put(Table::Silences, &self.tenant, c.silence.id.as_bytes(), &c.silence)])
    }

    /// One silence.
    pub fn get(&self, id: &str) -> Option<Silence> {
        self.lock().get(id).map(|c| c.silence.clone())
    }

    /// Every silence, in id order.
    pub fn list(&self) -> Vec<Silence> {
        let mut out: Vec<Silence> = self.lock().values().map(|c| c.silence.clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Ids of the silences active at `now` that match `labels`, sorted.
    pub fn silencing(&self, labels: &LabelSet, now: DateTime<Utc>) -> Vec<String> {
        let by_id = self.lock();
        let mut ids: Vec<String> = by_id
            .values()
            .filter(|c| c.silence.state_at(now) == SilenceState::Active && c.matchers.iter().all(|m| m.matches(labels)))
            .map(|c| c.silence.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Whether a silence started or ended in `(from, to]`: what is muted may have changed.
    pub fn changed_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        let within = |t: DateTime<Utc>| from < t && t <= to;
        self.lock().values().any(|c| within(c.silence.starts_at) || within(c.silence.ends_at))
    }

    /// Drop silences expired for longer than the retention; returns the store deletions.
    pub fn collect_garbage(&self, now: DateTime<Utc>) -> Vec<Op> {
        let retention = chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let mut by_id = self.lock();
        let old: Vec<String> = by_id.values().filter(|c| c.silence.ends_at + retention <= now).map(|c| c.silence.id.clone()).collect();
        old.into_iter()
            .map(|id| {
                by_id.remove(&id);
                Op::delete(Table::Silences, &self.tenant, id.as_bytes())
            })
            .collect()
    }
}

fn expire(s: &mut Silence, now: DateTime<Utc>) {
    if s.starts_at > now {
        s.starts_at = now;
    }
    s.ends_at = now;
    s.updated_at = now;
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[silences]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilencesConfig {
    /// Expired silences stay listed this long, then are deleted (Alertmanager's `data.retention`), e.g. "120h".
    #[serde(default = "default_silence_retention", with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for SilencesConfig {
    fn default() -> Self {
        SilencesConfig { retention: default_silence_retention() }
    }
}

fn default_silence_retention() -> Duration {
    Duration::from_secs(120 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-11-23T{s}Z")).unwrap().with_timezone(&Utc)
    }

    fn m(name: &str, value: &str, is_regex: bool, is_equal: bool) -> ApiMatcher {
        ApiMatcher { name: name.into(), value: value.into(), is_regex, is_equal }
    }

    fn post(id: Option<&str>, matchers: Vec<ApiMatcher>, start: &str, end: &str) -> PostableSilence {
        PostableSilence {
            id: id.map(str::to_string),
            matchers,
            starts_at: t(start),
            ends_at: t(end),
            created_by: "ops".into(),
            comment: "maintenance".into(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn validation_follows_alertmanager() {
        let s = Silences::new("t", Duration::from_secs(3600));
        let now = t("10:00:00");
        let cases = [
            (post(None, vec![], "10:00:00", "11:00:00"), "at least one matcher"),
            (post(None, vec![m("a", "", false, true)], "10:00:00", "11:00:00"), "empty string"),
            (post(None, vec![m("a", ".*", true, true)], "10:00:00", "11:00:00"), "empty string"),
            (post(None, vec![m("a", "(", true, true)], "10:00:00", "11:00:00"), "matchers[0].value"),
            (post(None, vec![m("1a", "x", false, true)], "10:00:00", "11:00:00"), "matchers[0].name"),
            (post(None, vec![m("a", "x", false, true)], "10:30:00", "10:20:00"), "before the start"),
            (post(None, vec![m("a", "x", false, true)], "09:00:00", "09:30:00"), "in the past"),
        ];
        for (p, needle) in cases {
            let e = s.set(p, now, usize::MAX).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(needle), "{} vs {needle}", e.message);
        }
        // A lone negative matcher matches the empty string, so every alert without the label: refused.
        let e = s.set(post(None, vec![m("env", "prod", false, false)], "10:00:00", "11:00:00"), now, usize::MAX).unwrap_err();
        assert!(e.status == 400 && e.message.starts_with("matchers:"), "{}", e.message);
        let e = s.set(post(None, vec![m("v", "x.*", true, false)], "10:00:00", "11:00:00"), now, usize::MAX).unwrap_err();
        assert!(e.message.contains("empty string"), "{}", e.message);
        // Beside a matcher that needs the label, it is fine.
        let both = vec![m("job", "api", false, true), m("env", "prod", false, false)];
        assert!(s.set(post(None, both, "10:00:00", "11:00:00"), now, usize::MAX).is_ok());
        let mut p = post(None, vec![m("a", "x", false, true)], "10:00:00", "11:00:00");
        p.comment = " ".into();
        assert!(s.set(p, now, usize::MAX).unwrap_err().message.contains("comment"));
        assert_eq!(
            s.set(post(Some("nope"), vec![m("a", "x", false, true)], "10:00:00", "11:00:00"), now, usize::MAX).unwrap_err().status,
            404
        );
    }

    #[test]
    fn active_silences_mute_matching_alerts() {
        let s = Silences::new("t", Duration::from_secs(3600));
        let (id, _) = s
            .set(
                post(None, vec![m("job", "api|web", true, true), m("env", "dev", false, false)], "10:00:00", "11:00:00"),
                t("09:00:00"),
                usize::MAX,
            )
            .unwrap();
        let prod_api = labels(&[("job", "api"), ("env", "prod")]);
        assert!(s.silencing(&prod_api, t("09:30:00")).is_empty(), "pending");
        assert_eq!(s.silencing(&prod_api, t("10:30:00")), std::slice::from_ref(&id));
        assert!(s.silencing(&labels(&[("job", "api"), ("env", "dev")]), t("10:30:00")).is_empty());
        assert!(s.silencing(&prod_api, t("11:00:00")).is_empty(), "expired");
        assert_eq!(s.get(&id).unwrap().state_at(t("10:30:00")), SilenceState::Active);
    }

    #[test]
    fn updates_keep_the_id_or_replace_the_silence_like_alertmanager() {
        let s = Silences::new("t", Duration::from_secs(3600));
        let now = t("10:30:00");
        let matchers = vec![m("a", "x", false, true)];
        let (id, _) = s.set(post(None, matchers.clone(), "10:00:00", "11:00:00"), now, usize::MAX).unwrap();
        assert_eq!(s.get(&id).unwrap().starts_at, now, "a new silence starts no earlier than now");
        // Extending an active silence keeps its id.
        let (same, ops) = s.set(post(Some(&id), matchers.clone(), "10:30:00", "12:00:00"), now, usize::MAX).unwrap();
        assert_eq!((same.as_str(), ops.len()), (id.as_str(), 1));
        assert_eq!(s.get(&id).unwrap().ends_at, t("12:00:00"));
        // Changing matchers expires the old one and creates a new id.
        let (new, ops) = s.set(post(Some(&id), vec![m("a", "y", false, true)], "10:30:00", "12:00:00"), now, usize::MAX).unwrap();
        assert_ne!(new, id);
        assert_eq!(ops.len(), 2);
        assert_eq!(s.get(&id).unwrap().state_at(now), SilenceState::Expired);
        // Expiring, twice.
        assert_eq!(s.expire(&new, now).unwrap().len(), 1);
        assert_eq!(s.expire(&new, now).unwrap_err().status, 400);
        assert_eq!(s.expire("nope", now).unwrap_err().status, 404);
    }

    #[test]
    fn max_silences_counts_live_silences_only() {
        let s = Silences::new("t", Duration::from_secs(3600));
        let now = t("10:00:00");
        let (id, _) = s.set(post(None, vec![m("a", "x", false, true)], "10:00:00", "11:00:00"), now, 1).unwrap();
        let e = s.set(post(None, vec![m("a", "y", false, true)], "10:00:00", "11:00:00"), now, 1).unwrap_err();
        assert_eq!(e.status, 429);
        assert!(e.message.contains("max_silences"));
        s.set(post(Some(&id), vec![m("a", "x", false, true)], "10:00:00", "12:00:00"), now, 1)
            .expect("updating in place is not a new silence");
        s.expire(&id, now).unwrap();
        s.set(post(None, vec![m("a", "y", false, true)], "10:00:00", "11:00:00"), now, 1).expect("expired ones do not count");
    }

    #[test]
    fn expired_silences_are_collected_after_retention() {
        let s = Silences::new("t", Duration::from_secs(3600));
        let (id, _) = s.set(post(None, vec![m("a", "x", false, true)], "10:00:00", "11:00:00"), t("10:00:00"), usize::MAX).unwrap();
        assert!(s.collect_garbage(t("11:30:00")).is_empty());
        let collected = s.collect_garbage(t("12:00:00"));
        assert_eq!(
            collected.iter().map(Op::target).collect::<Vec<_>>(),
            [(Table::Silences, "t".to_string(), id.as_bytes().to_vec(), true)]
        );
        assert!(s.list().is_empty());
    }
}
