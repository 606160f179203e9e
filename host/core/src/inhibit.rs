//! Inhibition rules with Alertmanager's semantics: a firing source alert mutes target alerts that share its `equal` labels.

use serde::Deserialize;
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::alert::{Fingerprint, LabelSet};
use crate::matcher::Matcher;
use crate::state::{AlertState, AlertView};

/// One checked rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

impl InhibitRule {
    /// Check a rule; the error names the key (`source_matchers[1]`) and what is wrong.
    pub fn parse(config: &InhibitRuleConfig) -> Result<InhibitRule, (String, String)> {
        let matchers = |list: &[String], key: &str| -> Result<Vec<Matcher>, (String, String)> {
            list.iter().enumerate().map(|(i, m)| Matcher::parse(m).map_err(|why| (format!("{key}[{i}]"), why))).collect()
        };
        let source = matchers(&config.source_matchers, "source_matchers")?;
        let target = matchers(&config.target_matchers, "target_matchers")?;
        if source.is_empty() || target.is_empty() {
            let key = if source.is_empty() { "source_matchers" } else { "target_matchers" };
            return Err((key.into(), "needs at least one matcher; an empty list would match every alert".into()));
        }
        if let Some((i, bad)) = config.equal.iter().enumerate().find(|(_, n)| !crate::alert::is_valid_label_name(n)) {
            return Err((format!("equal[{i}]"), format!("`{bad}` is not a valid label name")));
        }
        Ok(InhibitRule { source, target, equal: config.equal.clone() })
    }

    fn equal_values(&self, label: impl Fn(&str) -> Option<String>) -> Vec<String> {
        self.equal.iter().map(|n| label(n).unwrap_or_default()).collect()
    }
}

/// A tenant's rules.
#[derive(Debug, Clone, Default)]
pub struct Inhibitor {
    rules: Vec<InhibitRule>,
}

/// One rule's firing sources: `equal` label values → (source fingerprint, whether the source
/// also matches the rule's target side).
type SourceIndex = HashMap<Vec<String>, Vec<(Fingerprint, bool)>>;

/// The firing source alerts of each rule at one moment, indexed by their `equal` values.
#[derive(Debug, Default)]
pub struct Sources {
    by_rule: Vec<SourceIndex>,
}

impl Inhibitor {
    /// The tenant's rules, checked.
    pub fn new(configs: &[InhibitRuleConfig]) -> Result<Inhibitor, (usize, String, String)> {
        let rules = configs
            .iter()
            .enumerate()
            .map(|(i, c)| InhibitRule::parse(c).map_err(|(key, why)| (i, key, why)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Inhibitor { rules })
    }

    /// Whether there are no rules (nothing is ever inhibited).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether an alert with `labels` can be a source of some rule: its status changes may
    /// change what is inhibited.
    pub fn is_source(&self, labels: &LabelSet) -> bool {
        self.rules.iter().any(|r| r.source.iter().all(|m| m.matches(labels)))
    }

    /// Index the alerts of `state` that are firing at `now` and match a rule's source side.
    pub fn sources(&self, state: &AlertState, now: DateTime<Utc>) -> Sources {
        let mut by_rule: Vec<SourceIndex> = vec![HashMap::new(); self.rules.len()];
        if self.rules.is_empty() {
            return Sources { by_rule };
        }
        let matches = |ms: &[Matcher], a: &AlertView<'_>| ms.iter().all(|m| m.matches_value(a.label(&m.name)));
        state.for_each_firing(now, &mut |fp, a| {
            for (rule, index) in self.rules.iter().zip(by_rule.iter_mut()) {
                if matches(&rule.source, a) {
                    let key = rule.equal_values(|n| a.label(n).map(str::to_string));
                    index.entry(key).or_default().push((fp, matches(&rule.target, a)));
                }
            }
        });
        Sources { by_rule }
    }

    /// The source alert that inhibits the alert `fingerprint` with `labels`, if any. An alert
    /// matching both sides of a rule is never inhibited by another alert that does too.
    pub fn inhibited_by(&self, sources: &Sources, fingerprint: Fingerprint, labels: &LabelSet) -> Option<Fingerprint> {
        for (rule, index) in self.rules.iter().zip(&sources.by_rule) {
            if !rule.target.iter().all(|m| m.matches(labels)) {
                continue;
            }
            let two_sided = rule.source.iter().all(|m| m.matches(labels));
            let key = rule.equal_values(|n| labels.get(n).cloned());
            if let Some(candidates) = index.get(&key)
                && let Some((fp, _)) = candidates.iter().find(|(fp, both)| *fp != fingerprint && !(two_sided && *both))
            {
                return Some(*fp);
            }
        }
        None
    }
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[[inhibit_rules]]`: firing alerts matching `source_matchers` mute alerts matching
/// `target_matchers` that have the same values for the `equal` labels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Matchers in Alertmanager's syntax, e.g. `severity="critical"`.
    pub source_matchers: Vec<String>,
    /// Matchers the muted alerts satisfy, e.g. `severity=~"warning|info"`.
    pub target_matchers: Vec<String>,
    /// Labels whose values must be equal in source and target.
    #[serde(default)]
    pub equal: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;
    use crate::state::AlertSettings;
    use crate::store::{Commit, Op, Snapshot, Store, StoreError};

    struct NoStore;
    impl Store for NoStore {
        fn submit(&self, _: Vec<Op>) -> Commit {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(Ok(()));
            rx
        }
        fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn rule(source: &[&str], target: &[&str], equal: &[&str]) -> InhibitRuleConfig {
        let s = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        InhibitRuleConfig { source_matchers: s(source), target_matchers: s(target), equal: s(equal) }
    }

    fn state_with(alerts: &[(LabelSet, bool)]) -> (AlertState, DateTime<Utc>) {
        let now = Utc::now();
        let state = AlertState::new(
            "t",
            AlertSettings { resolve_timeout: std::time::Duration::from_secs(300), resolved_retention: std::time::Duration::ZERO },
        );
        let posted = alerts
            .iter()
            .map(|(l, firing)| Alert {
                labels: l.clone(),
                annotations: LabelSet::new(),
                starts_at: now - chrono::Duration::minutes(5),
                ends_at: (!firing).then(|| now - chrono::Duration::minutes(1)),
                generator_url: String::new(),
            })
            .collect();
        state.ingest(posted, now, &NoStore, usize::MAX).unwrap();
        (state, now)
    }

    #[test]
    fn a_firing_source_mutes_targets_with_equal_labels_only() {
        let inhibitor = Inhibitor::new(&[rule(&["severity=\"critical\""], &["severity=~\"warning|info\""], &["cluster"])]).unwrap();
        let critical = labels(&[("alertname", "Down"), ("severity", "critical"), ("cluster", "eu")]);
        let (state, now) = state_with(&[(critical.clone(), true)]);
        let sources = inhibitor.sources(&state, now);
        let warning_eu = labels(&[("alertname", "Slow"), ("severity", "warning"), ("cluster", "eu")]);
        let warning_us = labels(&[("alertname", "Slow"), ("severity", "warning"), ("cluster", "us")]);
        let fp = |l: &LabelSet| Fingerprint::of(l);
        assert_eq!(inhibitor.inhibited_by(&sources, fp(&warning_eu), &warning_eu), Some(fp(&critical)));
        assert_eq!(inhibitor.inhibited_by(&sources, fp(&warning_us), &warning_us), None, "another cluster");
        assert_eq!(inhibitor.inhibited_by(&sources, fp(&critical), &critical), None, "not a target");
    }

    #[test]
    fn resolved_sources_do_not_inhibit_and_two_sided_matches_do_not_inhibit_each_other() {
        let inhibitor = Inhibitor::new(&[rule(&["alertname=\"Node\""], &["alertname=\"Node\""], &[])]).unwrap();
        let (a, b) = (labels(&[("alertname", "Node"), ("i", "1")]), labels(&[("alertname", "Node"), ("i", "2")]));
        let (state, now) = state_with(&[(a.clone(), true), (b.clone(), true)]);
        let sources = inhibitor.sources(&state, now);
        assert_eq!(inhibitor.inhibited_by(&sources, Fingerprint::of(&a), &a), None);

        let inhibitor = Inhibitor::new(&[rule(&["severity=\"critical\""], &["severity=\"warning\""], &[])]).unwrap();
        let (state, now) = state_with(&[(labels(&[("severity", "critical")]), false)]);
        let w = labels(&[("severity", "warning")]);
        assert_eq!(inhibitor.inhibited_by(&inhibitor.sources(&state, now), Fingerprint::of(&w), &w), None, "the source resolved");
    }

    #[test]
    fn bad_rules_are_named() {
        assert_eq!(Inhibitor::new(&[rule(&["severity=critical"], &["x~~1"], &[])]).unwrap_err().1, "target_matchers[0]");
        assert_eq!(Inhibitor::new(&[rule(&[], &["a=\"1\""], &[])]).unwrap_err().1, "source_matchers");
        assert_eq!(Inhibitor::new(&[rule(&["a=\"1\""], &["b=\"1\""], &["ok", "not ok"])]).unwrap_err().1, "equal[1]");
    }
}
