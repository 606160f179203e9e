//! One plugin instance's sandbox: its state, the capabilities it is granted, its limits, and how a call is run and judged.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::belfry::receiver::{clock, http, log, smtp, types};
use super::bindings::{Receiver as Bindings, ReceiverPre};
use super::error::{Blame, DeliveryFailure, FailureKind};
use super::mailer::Mailer;
use super::outbound::Outbound;
use crate::config::Limits;

/// Who an instance works for; fixed for the instance's life.
pub struct Grants {
    /// Tenant that owns the receiver.
    pub tenant: String,
    /// Receiver name.
    pub receiver: String,
    /// The plugin's name (for log lines).
    pub plugin: String,
    /// Limits on each call.
    pub limits: Limits,
    /// Outbound HTTP, `None` when the receiver allows no host.
    pub http: Option<Outbound>,
    /// Mail through the host, `None` unless the receiver has an `[receivers.smtp]` table.
    pub smtp: Option<Mailer>,
    /// Secret values of this receiver, masked in everything the plugin says.
    pub secrets: Redactor,
}

/// Replaces known secret values in text with `***`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Mask these values (empty and very short values are ignored: masking "a" would garble text).
    /// A secret URL (a Slack or Discord webhook) or `id:secret` token (Telegram's) is a
    /// credential in pieces: its path segments, query values and `:`-separated parts of 12
    /// characters or more are masked on their own too, should a service echo just one.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        let pieces: Vec<String> = secrets
            .iter()
            .flat_map(|s| match s.split_once("://") {
                // After the host: path segments, query names and values.
                Some((_, rest)) => rest.split(['/', '?', '&', '=', '#']).skip(1).collect::<Vec<_>>(),
                // `id:secret` tokens (Telegram's, Basic auth's user:password).
                None => s.split(':').collect(),
            })
            .filter(|piece| piece.len() >= 12)
            .map(str::to_string)
            .collect();
        secrets.extend(pieces);
        secrets.sort();
        secrets.dedup();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// Bookkeeping for the call in progress.
#[derive(Default)]
struct CallState {
    started: Option<Instant>,
    host_time: Duration,
    requests: u32,
    log_lines: u32,
    violation: Option<FailureKind>,
}

/// The data of one instance's `Store`.
pub struct State {
    grants: Arc<Grants>,
    call: CallState,
    memory_cap: usize,
    /// The linear memory's size, as last grown.
    memory_bytes: usize,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl ResourceLimiter for State {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.call.violation = Some(FailureKind::MemoryLimit);
            return Err(wasmtime::format_err!("memory limit of {} bytes reached", self.memory_cap));
        }
        self.memory_bytes = self.memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; 100k is far beyond any channel plugin's needs.
        const MAX_TABLE_ELEMENTS: usize = 100_000;
        if desired > MAX_TABLE_ELEMENTS {
            self.call.violation = Some(FailureKind::MemoryLimit);
            return Err(wasmtime::format_err!("table limit of {MAX_TABLE_ELEMENTS} elements reached"));
        }
        Ok(true)
    }
}

impl types::Host for State {}

impl http::Host for State {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, http::Error> {
        let limits = &self.grants.limits;
        if self.call.requests >= limits.max_requests {
            return Err(http::Error::TooManyRequests(limits.max_requests));
        }
        self.call.requests += 1;
        let Some(outbound) = self.grants.http.clone() else {
            return Err(http::Error::Denied(format!(
                "receiver `{}` allows no outbound HTTP; list the hosts its plugin may reach in allowed_hosts",
                self.grants.receiver
            )));
        };
        let started = Instant::now();
        let result = outbound.send(request).await;
        // Time spent waiting on the network is not the guest's CPU time.
        self.call.host_time += started.elapsed();
        if let Err(e) = &result {
            let g = &self.grants;
            tracing::debug!(tenant = %g.tenant, receiver = %g.receiver, plugin = %g.plugin, error = ?e, "plugin HTTP request failed");
        }
        result
    }
}

impl smtp::Host for State {
    async fn send(&mut self, message: smtp::Message) -> Result<(), smtp::Error> {
        let limits = &self.grants.limits;
        // Each mail counts against the same per-call budget as HTTP requests.
        if self.call.requests >= limits.max_requests {
            return Err(smtp::Error::TooManyRequests(limits.max_requests));
        }
        self.call.requests += 1;
        let Some(mailer) = self.grants.smtp.clone() else {
            return Err(smtp::Error::Denied(format!(
                "receiver `{}` has no SMTP grant; add a [receivers.smtp] table if its plugin should send mail",
                self.grants.receiver
            )));
        };
        let started = Instant::now();
        let result = mailer.send(message).await;
        self.call.host_time += started.elapsed();
        result.map_err(|e| match e {
            // The server's reply may quote what it was sent; mask the receiver's secrets.
            smtp::Error::Auth(m) => smtp::Error::Auth(self.grants.secrets.redact(&m)),
            smtp::Error::Rejected(m) => smtp::Error::Rejected(self.grants.secrets.redact(&m)),
            smtp::Error::Temporary(m) => smtp::Error::Temporary(self.grants.secrets.redact(&m)),
            other => other,
        })
    }
}

impl log::Host for State {
    fn write(&mut self, level: log::Level, message: String) {
        let g = &self.grants;
        let max = g.limits.max_log_lines;
        self.call.log_lines += 1;
        if self.call.log_lines > max {
            if self.call.log_lines == max + 1 {
                tracing::warn!(tenant = %g.tenant, receiver = %g.receiver, plugin = %g.plugin, limit = max, "plugin log line limit reached; dropping further lines of this call");
            }
            return;
        }
        const MAX_LINE: usize = 4096;
        let mut message = g.secrets.redact(&message);
        if message.len() > MAX_LINE {
            let cut = (0..=MAX_LINE).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
            message.truncate(cut);
            message.push('…');
        }
        let (tenant, receiver, plugin) = (&g.tenant, &g.receiver, &g.plugin);
        match level {
            log::Level::Trace => tracing::trace!(target: "belfry::plugin_log", %tenant, %receiver, %plugin, "{message}"),
            log::Level::Debug => tracing::debug!(target: "belfry::plugin_log", %tenant, %receiver, %plugin, "{message}"),
            log::Level::Info => tracing::info!(target: "belfry::plugin_log", %tenant, %receiver, %plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "belfry::plugin_log", %tenant, %receiver, %plugin, "{message}"),
            log::Level::Error => tracing::error!(target: "belfry::plugin_log", %tenant, %receiver, %plugin, "{message}"),
        }
    }
}

impl clock::Host for State {
    fn now_ms(&mut self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

/// A live instance with its store.
pub struct Instance {
    store: Store<State>,
    bindings: Bindings,
    /// Calls made on it so far.
    pub uses: u32,
}

/// Create a store with the grants and limits, and instantiate the plugin in it.
pub async fn instantiate(pre: &ReceiverPre<State>, grants: Arc<Grants>) -> Result<Instance, DeliveryFailure> {
    let memory_cap = grants.limits.memory_bytes();
    let state = State {
        grants,
        call: CallState::default(),
        memory_cap,
        memory_bytes: 0,
        // No preopened directories, no environment, no arguments, closed stdio; sockets deny every
        // address. Linked only because std guests import WASI interfaces they never use.
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
    };
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|s| s as &mut dyn ResourceLimiter);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        let Some(started) = state.call.started else {
            return Ok(UpdateDeadline::Yield(1));
        };
        let guest_time = started.elapsed().saturating_sub(state.call.host_time);
        if guest_time > state.grants.limits.cpu() {
            state.call.violation = Some(FailureKind::CpuDeadline);
            return Err(wasmtime::format_err!("CPU deadline of {} ms exceeded", state.grants.limits.cpu_ms));
        }
        // Let other deliveries run on this worker thread while the guest computes.
        Ok(UpdateDeadline::Yield(1))
    });
    store.set_epoch_deadline(1);
    let bindings = pre.instantiate_async(&mut store).await.map_err(|e| {
        let kind = store.data_mut().call.violation.take().unwrap_or(FailureKind::Unavailable);
        DeliveryFailure { blame: Blame::Plugin, kind, message: format!("cannot instantiate the plugin: {e:#}") }
    })?;
    Ok(Instance { store, bindings, uses: 0 })
}

/// The outcome of one call, and whether the instance may serve another.
pub struct CallOutcome<T> {
    /// The plugin's answer, or why there was none.
    pub result: Result<T, DeliveryFailure>,
    /// False after a trap or limit violation: the instance must be dropped.
    pub reusable: bool,
    /// What the call used.
    pub usage: Usage,
}

/// What one plugin call used.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Time in the guest (the call's wall time minus host calls waiting on the network): the
    /// measure the CPU deadline applies to.
    pub guest_time: Duration,
    /// The instance's linear memory after the call.
    pub memory_bytes: usize,
}

impl Instance {
    /// Run `deliver` under the call limits.
    pub async fn deliver(&mut self, config: &types::Config, notification: &types::Notification) -> CallOutcome<types::DeliveryReport> {
        let outcome =
            self.call(async |store, bindings| bindings.belfry_receiver_plugin().call_deliver(store, config, notification).await).await;
        let secrets = &self.store.data().grants.secrets;
        CallOutcome {
            result: outcome.result.and_then(|r| r.map_err(|e| plugin_error(e, secrets))),
            reusable: outcome.reusable,
            usage: outcome.usage,
        }
    }

    /// Run `validate-config` under the call limits.
    pub async fn validate_config(&mut self, config: &types::Config) -> Result<Result<(), Vec<types::ConfigError>>, DeliveryFailure> {
        self.call(async |store, bindings| bindings.belfry_receiver_plugin().call_validate_config(store, config).await).await.result
    }

    /// Run `describe` under the call limits.
    pub async fn describe(&mut self) -> Result<types::PluginInfo, DeliveryFailure> {
        self.call(async |store, bindings| bindings.belfry_receiver_plugin().call_describe(store).await).await.result
    }

    async fn call<T>(&mut self, f: impl AsyncFnOnce(&mut Store<State>, &Bindings) -> wasmtime::Result<T>) -> CallOutcome<T> {
        self.uses += 1;
        self.store.data_mut().call = CallState { started: Some(Instant::now()), ..CallState::default() };
        self.store.set_epoch_deadline(1);
        let timeout = self.store.data().grants.limits.call_timeout();
        let result = tokio::time::timeout(timeout, f(&mut self.store, &self.bindings)).await;
        let call = std::mem::take(&mut self.store.data_mut().call);
        let usage = Usage {
            guest_time: call.started.map_or(Duration::ZERO, |s| s.elapsed().saturating_sub(call.host_time)),
            memory_bytes: self.store.data().memory_bytes,
        };
        match result {
            Ok(Ok(value)) => CallOutcome { result: Ok(value), reusable: true, usage },
            Ok(Err(error)) => {
                let kind = call.violation.unwrap_or(FailureKind::Trap);
                let message = match kind {
                    FailureKind::CpuDeadline => {
                        format!("the plugin ran past its CPU budget of {} ms and was stopped", self.store.data().grants.limits.cpu_ms)
                    }
                    FailureKind::MemoryLimit => {
                        format!(
                            "the plugin tried to use more than {} MiB of memory and was stopped",
                            self.store.data().grants.limits.memory_mib
                        )
                    }
                    _ => format!("the plugin trapped: {}", trap_summary(&error)),
                };
                CallOutcome { result: Err(DeliveryFailure { blame: Blame::Plugin, kind, message }), reusable: false, usage }
            }
            Err(_) => CallOutcome {
                result: Err(DeliveryFailure {
                    blame: Blame::Plugin,
                    kind: FailureKind::Timeout,
                    message: format!("the plugin call did not finish within {} ms", timeout.as_millis()),
                }),
                reusable: false,
                usage,
            },
        }
    }
}

/// A one-line description of a trap: its code (e.g. "wasm `unreachable` instruction executed")
/// rather than the multi-line wasm backtrace that wraps it.
fn trap_summary(error: &wasmtime::Error) -> String {
    let text = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    text.lines().next().unwrap_or("unknown trap").trim().to_string()
}

/// The plugin's own verdict, turned into a failure with blame; secrets masked.
fn plugin_error(e: types::DeliveryError, secrets: &Redactor) -> DeliveryFailure {
    let (blame, kind, message) = match e {
        types::DeliveryError::Retryable(r) => {
            (Blame::Remote, FailureKind::Retryable { retry_after: r.retry_after_ms.map(Duration::from_millis) }, r.message)
        }
        types::DeliveryError::Permanent(m) => (Blame::Remote, FailureKind::Permanent, m),
        types::DeliveryError::Misconfigured(m) => (Blame::Configuration, FailureKind::Misconfigured, m),
    };
    DeliveryFailure { blame, kind, message: secrets.redact(&message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_masks_every_secret_longest_first() {
        let r = Redactor::new(["s3cr3t-token".to_string(), "s3cr3t".to_string(), "ab".to_string()]);
        assert_eq!(r.redact("Bearer s3cr3t-token and s3cr3t, ab"), "Bearer *** and ***, ab");
    }

    #[test]
    fn a_secret_url_is_masked_whole_and_in_its_pieces() {
        let r = Redactor::new(["https://hooks.slack.com/services/T0001/B0002/XXXXsecretXXXX?token=abcdefgh1234".to_string()]);
        assert_eq!(r.redact("posted to https://hooks.slack.com/services/T0001/B0002/XXXXsecretXXXX?token=abcdefgh1234"), "posted to ***");
        assert_eq!(r.redact("invalid token XXXXsecretXXXX and abcdefgh1234"), "invalid token *** and ***");
        assert_eq!(r.redact("services hooks.slack.com"), "services hooks.slack.com", "the host and short segments stay readable");
        let r = Redactor::new(["123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw".to_string()]);
        assert_eq!(r.redact("Unauthorized: AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw for bot 123456789"), "Unauthorized: *** for bot 123456789");
    }
}
