//! Cross-checks the typed data cannot express: unique names, references that resolve, fallback chains without loops; each problem named in the file that defines it.

use super::errors::ConfigError;
use super::file::Config;
use super::file::ReceiverConfig;
use super::file::parse_token_hash;
use std::path::Path;
use std::time::Duration;

impl Config {
    /// Cross-references: unique receivers, known plugins, a routed receiver, valid tokens; for
    /// every tenant, each problem named in the file that defines it.
    pub(super) fn check(&self, errors: &mut Vec<ConfigError>) {
        let mut push =
            |file: &Path, key: String, message: String| errors.push(ConfigError { line: None, file: file.to_path_buf(), key, message });
        if self.route.is_none() && !self.receivers.is_empty() {
            push(&self.file, "route".into(), "the top-level [[receivers]] need a [route] table naming where alerts go".into());
        }
        if self.route.is_none() && self.tenant_files.is_empty() {
            push(
                &self.file,
                "route".into(),
                "no tenant is defined: add a [route] (and [[receivers]]) for the default tenant, or [tenants] dir".into(),
            );
        }
        for tenant in self.tenants() {
            for (i, r) in tenant.receivers.iter().enumerate() {
                if r.name.trim().is_empty() {
                    push(tenant.file, format!("receivers[{i}].name"), "must not be empty".into());
                }
                if tenant.receivers[..i].iter().any(|o| o.name == r.name) {
                    push(
                        tenant.file,
                        format!("receivers[{i}].name"),
                        format!("receiver `{}` is defined twice; give each receiver its own name", r.name),
                    );
                }
                if !self.plugins.contains_key(&r.plugin) {
                    let known: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
                    push(
                        tenant.file,
                        format!("receivers[{i}].plugin"),
                        format!(
                            "unknown plugin `{}`; declare it under [plugins.{}] in {} (known: {})",
                            r.plugin,
                            r.plugin,
                            self.file.display(),
                            known.join(", ")
                        ),
                    );
                }
                for (j, host) in r.allowed_hosts.iter().enumerate() {
                    if let Err(why) = crate::plugin::HostPattern::parse(host) {
                        push(tenant.file, format!("receivers[{i}].allowed_hosts[{j}]"), why);
                    }
                }
                if let Err((key, why)) = check_delivery_policy(r, tenant.receivers) {
                    push(tenant.file, format!("receivers[{i}].{key}"), why);
                }
                for (key, why) in r.smtp.iter().flat_map(|smtp| smtp.check(&self.base_dir)) {
                    push(tenant.file, format!("receivers[{i}].smtp.{key}"), why);
                }
            }
            if !tenant.receivers.iter().any(|r| r.name == tenant.route.receiver) {
                push(
                    tenant.file,
                    "route.receiver".into(),
                    format!("no receiver is named `{}`; add a [[receivers]] entry with that name", tenant.route.receiver),
                );
            }
            let route = tenant.route;
            if let Err(why) = crate::route::GroupBy::from_names(route.group_by.clone()) {
                push(tenant.file, "route.group_by".into(), why);
            }
            if route.group_interval.is_zero() {
                push(tenant.file, "route.group_interval".into(), "must be at least 1s".into());
            }
            for (i, rule) in tenant.inhibit_rules.iter().enumerate() {
                if let Err((key, why)) = crate::inhibit::InhibitRule::parse(rule) {
                    push(tenant.file, format!("inhibit_rules[{i}].{key}"), why);
                }
            }
            if !crate::template::LOCALES.contains(&tenant.templates.locale.as_str()) {
                push(
                    tenant.file,
                    "templates.locale".into(),
                    format!("`{}` has no default templates; use one of {}", tenant.templates.locale, crate::template::LOCALES.join(", ")),
                );
            }
            if tenant.templates.timezone.parse::<chrono_tz::Tz>().is_err() {
                push(
                    tenant.file,
                    "templates.timezone".into(),
                    format!("unknown time zone `{}` (use e.g. Europe/Paris)", tenant.templates.timezone),
                );
            }
            if let Err(problems) = tenant.templates() {
                for p in problems {
                    push(tenant.file, p.key, p.message);
                }
            }
            for (i, policy) in tenant.escalation_policies.iter().enumerate() {
                let key = |k: String| format!("escalation_policies[{i}].{k}");
                if tenant.escalation_policies[..i].iter().any(|o| o.name == policy.name) {
                    push(tenant.file, key("name".into()), format!("`{}` is defined twice", policy.name));
                }
                if policy.steps.is_empty() {
                    push(tenant.file, key("steps".into()), "needs at least one step".into());
                }
                for (j, step) in policy.steps.iter().enumerate() {
                    if step.wait < Duration::from_secs(1) {
                        push(tenant.file, key(format!("steps[{j}].wait")), "must be at least 1s".into());
                    }
                    if step.notify.is_empty() && step.notify_on_call.is_empty() {
                        push(
                            tenant.file,
                            key(format!("steps[{j}].notify")),
                            "name at least one receiver (or a schedule in notify_on_call)".into(),
                        );
                    }
                    for name in step.notify_on_call.iter().filter(|n| !tenant.schedules.iter().any(|s| &s.name == *n)) {
                        push(
                            tenant.file,
                            key(format!("steps[{j}].notify_on_call")),
                            format!("no schedule is named `{name}`; add a [[schedules]] entry"),
                        );
                    }
                    for name in step.notify.iter().filter(|n| !tenant.receivers.iter().any(|r| &r.name == *n)) {
                        push(tenant.file, key(format!("steps[{j}].notify")), format!("no receiver is named `{name}`"));
                    }
                    for name in step.active_time_intervals.iter().filter(|n| !tenant.time_intervals.iter().any(|t| &t.name == *n)) {
                        push(tenant.file, key(format!("steps[{j}].active_time_intervals")), format!("no time interval is named `{name}`"));
                    }
                }
            }
            for (i, schedule) in tenant.schedules.iter().enumerate() {
                let key = |k: &str| format!("schedules[{i}].{k}");
                if tenant.schedules[..i].iter().any(|o| o.name == schedule.name) {
                    push(tenant.file, key("name"), format!("`{}` is defined twice", schedule.name));
                }
                if let Err(problems) = crate::oncall::Schedule::from_config(schedule) {
                    for (k, message) in problems {
                        push(tenant.file, key(&k), message);
                    }
                }
                let receivers = schedule
                    .rotations
                    .iter()
                    .enumerate()
                    .flat_map(|(j, r)| r.receivers.iter().map(move |n| (format!("rotations[{j}].receivers"), n)));
                let overrides = schedule.overrides.iter().enumerate().map(|(j, o)| (format!("overrides[{j}].receiver"), &o.receiver));
                for (k, name) in receivers.chain(overrides).filter(|(_, n)| !tenant.receivers.iter().any(|r| &r.name == *n)) {
                    push(tenant.file, key(&k), format!("no receiver is named `{name}`"));
                }
                for (j, r) in schedule.rotations.iter().enumerate() {
                    for name in r.active_time_intervals.iter().filter(|n| !tenant.time_intervals.iter().any(|t| &t.name == *n)) {
                        push(
                            tenant.file,
                            key(&format!("rotations[{j}].active_time_intervals")),
                            format!("no time interval is named `{name}`"),
                        );
                    }
                }
            }
            if let Some(name) = &tenant.route.escalation
                && !tenant.escalation_policies.iter().any(|p| &p.name == name)
            {
                push(
                    tenant.file,
                    "route.escalation".into(),
                    format!("no escalation policy is named `{name}`; add an [[escalation_policies]] entry"),
                );
            }
            for (i, interval) in tenant.time_intervals.iter().enumerate() {
                if tenant.time_intervals[..i].iter().any(|o| o.name == interval.name) {
                    push(tenant.file, format!("time_intervals[{i}].name"), format!("`{}` is defined twice", interval.name));
                }
                if let Err((key, why)) = crate::timeinterval::TimeInterval::parse(interval) {
                    push(tenant.file, format!("time_intervals[{i}].{key}"), why);
                }
            }
            let l = &tenant.limits;
            if l.ingest_rate == 0 || l.ingest_burst == 0 {
                push(tenant.file, "limits.ingest_rate".into(), "ingest_rate and ingest_burst must be at least 1".into());
            } else if (l.ingest_burst as usize) < l.max_alerts_per_request {
                push(
                    tenant.file,
                    "limits.ingest_burst".into(),
                    format!(
                        "{} is below max_alerts_per_request ({}): a full request could never pass; raise it",
                        l.ingest_burst, l.max_alerts_per_request
                    ),
                );
            }
            for (i, token) in tenant.tokens.iter().enumerate() {
                if let Err(why) = parse_token_hash(token) {
                    push(tenant.file, format!("tokens[{i}]"), why);
                }
            }
        }
        for (i, token) in self.server.admin_tokens.iter().enumerate() {
            if let Err(why) = parse_token_hash(token) {
                push(&self.file, format!("server.admin_tokens[{i}]"), why);
            }
        }
        if self.alerts.sweep_interval.is_zero() {
            push(&self.file, "alerts.sweep_interval".into(), "must be greater than zero, e.g. \"1s\"".into());
        }
        for (name, p) in &self.plugins {
            if let Some(sha) = &p.sha256
                && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
            {
                push(&self.file, format!("plugins.{name}.sha256"), "must be 64 hex digits (sha256sum of the .wasm)".into());
            }
        }
    }
}

/// A receiver's fallback, rate limit, retry and breaker settings, checked against its tenant's
/// receivers: the fallback exists and no chain of fallbacks comes back to where it started.
pub(super) fn check_delivery_policy(r: &ReceiverConfig, all: &[ReceiverConfig]) -> Result<(), (String, String)> {
    if let Some(rate) = &r.rate_limit
        && (rate.messages == 0 || rate.burst == Some(0) || rate.per.is_zero())
    {
        return Err(("rate_limit".into(), "messages, burst and per must be greater than zero".into()));
    }
    if r.retry.max_attempts == 0 {
        return Err(("retry.max_attempts".into(), "must be at least 1 (1 means: never retry)".into()));
    }
    if r.retry.initial_backoff.is_zero() || r.retry.max_backoff < r.retry.initial_backoff {
        return Err(("retry".into(), "initial_backoff must be greater than zero and at most max_backoff".into()));
    }
    if r.breaker.failure_threshold == 0 || r.breaker.open_for.is_zero() {
        return Err(("breaker".into(), "failure_threshold and open_for must be greater than zero".into()));
    }
    let mut chain = vec![r.name.as_str()];
    let mut next = r.fallback.as_deref();
    while let Some(name) = next {
        let Some(fallback) = all.iter().find(|o| o.name == name) else {
            return Err(("fallback".into(), format!("no receiver is named `{name}` in this tenant")));
        };
        if chain.contains(&name) {
            chain.push(name);
            return Err((
                "fallback".into(),
                format!("the fallbacks form a loop: {}; end the chain at a receiver without one", chain.join(" -> ")),
            ));
        }
        chain.push(name);
        next = fallback.fallback.as_deref();
    }
    Ok(())
}
