//! One plugin instance's sandbox: its state, the capabilities it is granted, its limits, and how a call is run and judged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::belfry::receiver::{clock, http, log, smtp, types};
use super::bindings::{Receiver as Bindings, ReceiverPre};
use super::error::{Blame, DeliveryFailure, FailureKind};
use super::mailer::Mailer;
use super::outbound::Outbound;
use super::settings::Limits;

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

/// Replaces known secret values in text with `***`, in every form they take on the wire.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Literal forms to mask, longest first.
    secrets: Vec<String>,
    /// The raw secrets (and pieces), to find inside base64 tokens once decoded.
    raw: Vec<String>,
}

/// A secret, or a piece of one, shorter than this is not masked: masking "a" would garble text.
const MIN_SECRET: usize = 4;

/// Base64 of a secret is masked where it is at least this long: shorter runs of base64
/// characters occur in ordinary text.
const MIN_ENCODED: usize = 8;

impl Redactor {
    /// Mask these values (empty and very short values are ignored: masking "a" would garble text).
    /// A secret URL (a Slack or Discord webhook) or `id:secret` token (Telegram's) is a
    /// credential in pieces: its path segments, query values and `:`-separated parts of 12
    /// characters or more are masked on their own too, should a service echo just one.
    ///
    /// Each is masked in the forms a request carries it in too: percent-encoded (a query or
    /// form value), JSON-escaped, and base64 (an `Authorization: Basic` header, a token in a
    /// body), standard or URL-safe, at any alignment within a longer encoded value; and a
    /// base64 token whose decoded text contains a secret is masked whole, however short the
    /// secret (`u:<password>`).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut raw: Vec<String> = secrets.into_iter().filter(|s| s.len() >= MIN_SECRET).collect();
        let pieces: Vec<String> = raw
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
        raw.extend(pieces);
        raw.sort();
        raw.dedup();
        let mut secrets = raw.clone();
        for s in &raw {
            secrets.extend(encoded_forms(s));
        }
        secrets.retain(|s| s.len() >= MIN_SECRET);
        secrets.sort();
        secrets.dedup();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets, raw }
    }

    /// The longest form masked, in bytes (0 with nothing to mask).
    pub fn longest(&self) -> usize {
        self.secrets.first().map_or(0, String::len)
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        if self.raw.is_empty() {
            return text.to_string();
        }
        let mut out = self.mask_encoded_tokens(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// `text` with each base64 token that decodes to text containing a secret replaced by `***`.
    fn mask_encoded_tokens(&self, text: &str) -> String {
        use ::base64::Engine;
        use ::base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_' | '=');
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(is_b64) {
            out.push_str(&rest[..start]);
            let len = rest[start..].find(|c: char| !is_b64(c)).unwrap_or(rest.len() - start);
            let token = &rest[start..start + len];
            let bare = token.trim_end_matches('=');
            let decoded =
                (bare.len() >= MIN_ENCODED).then(|| STANDARD_NO_PAD.decode(bare).or_else(|_| URL_SAFE_NO_PAD.decode(bare)).ok()).flatten();
            let leaks = decoded.is_some_and(|bytes| {
                let bytes = String::from_utf8_lossy(&bytes);
                self.raw.iter().any(|s| bytes.contains(s.as_str()))
            });
            out.push_str(if leaks { "***" } else { token });
            rest = &rest[start + len..];
        }
        out.push_str(rest);
        out
    }
}

/// The forms `secret` takes inside a request: percent-encoded (upper and lower case hex, `+` for
/// a space as forms write it), JSON-escaped, and base64 (standard and URL-safe) at each of the
/// three alignments it can have inside a longer encoded value: the characters that encode only
/// the secret's own bytes, so they appear whatever surrounds it.
fn encoded_forms(secret: &str) -> Vec<String> {
    use ::base64::Engine;
    use ::base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = Vec::new();
    let percent: String = secret
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    forms.push(lower_hex_escapes(&percent));
    forms.push(percent.replace("%20", "+"));
    forms.push(percent);
    forms.push(serde_json::to_string(secret).map(|q| q[1..q.len() - 1].to_string()).unwrap_or_default());
    let bytes = secret.as_bytes();
    // At one of the three skips the secret's remaining bytes start on a group boundary of the
    // outer encoding.
    for skip in 0..3 {
        let Some(aligned) = bytes.get(skip..) else { break };
        // Whole groups of three bytes only: a partial group's last character depends on what follows.
        let whole = &aligned[..aligned.len() / 3 * 3];
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(whole);
            if encoded.len() >= MIN_ENCODED {
                forms.push(encoded);
            }
        }
    }
    forms.retain(|f| f != secret);
    forms
}

/// `%2F` → `%2f`: the hex digits of percent escapes in lower case.
fn lower_hex_escapes(percent: &str) -> String {
    let mut out = String::with_capacity(percent.len());
    let mut chars = percent.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
        }
    }
    out
}

/// Which kind of call is in progress: load-time calls (`describe`, `validate-config`) do no I/O
/// and get a tight bound; deliveries may wait on the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// `describe`, `validate-config`, and instantiation: no capability, the CPU budget as wall bound.
    #[default]
    Load,
    /// `deliver`: the receiver's grants, waits on the network not counted as the plugin's.
    Deliver,
}

/// A call's time, split into the plugin's and the host's. Shared with the call's watchdog, which
/// reads it while the call runs: time blocked anywhere but in a host request (a WASI sleep or
/// poll, say) is the plugin's, whether or not a guest instruction runs meanwhile.
struct CallClock {
    started: Instant,
    /// Host request time of the requests that finished, in nanoseconds.
    host_ns: AtomicU64,
    /// When the host request in progress started (nanoseconds after `started`, plus one); 0 if none.
    in_host_since: AtomicU64,
}

impl CallClock {
    fn start() -> Arc<CallClock> {
        Arc::new(CallClock { started: Instant::now(), host_ns: AtomicU64::new(0), in_host_since: AtomicU64::new(0) })
    }

    fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A host request (HTTP, SMTP) starts: its time is the host's, not the plugin's.
    fn enter_host(&self) {
        self.in_host_since.store(self.elapsed_ns() + 1, Ordering::Relaxed);
    }

    fn leave_host(&self) {
        let since = self.in_host_since.swap(0, Ordering::Relaxed);
        if since > 0 {
            self.host_ns.fetch_add((self.elapsed_ns() + 1).saturating_sub(since), Ordering::Relaxed);
        }
    }

    /// The call's time so far, less its host requests: what the CPU budget applies to.
    fn guest_time(&self) -> Duration {
        let now = self.elapsed_ns();
        let mut host = self.host_ns.load(Ordering::Relaxed);
        let since = self.in_host_since.load(Ordering::Relaxed);
        if since > 0 {
            host += (now + 1).saturating_sub(since);
        }
        Duration::from_nanos(now.saturating_sub(host))
    }
}

/// Bookkeeping for the call in progress.
#[derive(Default)]
struct CallState {
    clock: Option<Arc<CallClock>>,
    phase: Phase,
    requests: u32,
    log_lines: u32,
    violation: Option<FailureKind>,
}

impl CallState {
    fn new(phase: Phase) -> (CallState, Arc<CallClock>) {
        let clock = CallClock::start();
        (CallState { clock: Some(clock.clone()), phase, ..CallState::default() }, clock)
    }
}

/// The data of one instance's `Store`.
pub struct State {
    grants: Arc<Grants>,
    call: CallState,
    memory_cap: usize,
    /// The instance's linear memories together, as last grown: the cap applies to their sum,
    /// so a component with several memories gets no more than one with one.
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
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_bytes.saturating_sub(current).saturating_add(desired);
        if total > self.memory_cap {
            self.call.violation = Some(FailureKind::MemoryLimit);
            return Err(wasmtime::format_err!("memory limit of {} bytes reached", self.memory_cap));
        }
        self.memory_bytes = total;
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

/// Why a load-time call's request is refused.
const LOAD_TIME_IO: &str = "describe and validate-config may not send requests or mail (the contract: they do no I/O); check the configuration offline and report problems from deliver";

/// Run a host request: time spent waiting on the network is not the plugin's.
async fn in_host<T>(clock: Option<Arc<CallClock>>, request: impl std::future::Future<Output = T>) -> T {
    if let Some(c) = &clock {
        c.enter_host();
    }
    let result = request.await;
    if let Some(c) = &clock {
        c.leave_host();
    }
    result
}

impl http::Host for State {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, http::Error> {
        if self.call.phase == Phase::Load {
            return Err(http::Error::Denied(LOAD_TIME_IO.into()));
        }
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
        let result = in_host(self.call.clock.clone(), outbound.send(request)).await;
        if let Err(e) = &result {
            let g = &self.grants;
            tracing::debug!(tenant = %g.tenant, receiver = %g.receiver, plugin = %g.plugin, error = ?e, "plugin HTTP request failed");
        }
        result
    }
}

impl smtp::Host for State {
    async fn send(&mut self, message: smtp::Message) -> Result<(), smtp::Error> {
        if self.call.phase == Phase::Load {
            return Err(smtp::Error::Denied(LOAD_TIME_IO.into()));
        }
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
        let result = in_host(self.call.clock.clone(), mailer.send(message)).await;
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
        let message = plugin_text(&message, &g.secrets);
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

/// Create a store with the grants and limits, and instantiate the plugin in it (a component's
/// start code runs under the load-time bound).
pub async fn instantiate(pre: &ReceiverPre<State>, grants: Arc<Grants>) -> Result<Instance, DeliveryFailure> {
    let memory_cap = grants.limits.memory_bytes();
    let (call, clock) = CallState::new(Phase::Load);
    let (cpu, wall) = bounds(&grants.limits, Phase::Load);
    let state = State {
        grants,
        call,
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
        let Some(clock) = &state.call.clock else {
            return Ok(UpdateDeadline::Yield(1));
        };
        let (cpu, _) = bounds(&state.grants.limits, state.call.phase);
        if clock.guest_time() > cpu {
            state.call.violation = Some(FailureKind::CpuDeadline);
            return Err(wasmtime::format_err!("CPU deadline of {} ms exceeded", cpu.as_millis()));
        }
        // Let other deliveries run on this worker thread while the guest computes.
        Ok(UpdateDeadline::Yield(1))
    });
    store.set_epoch_deadline(1);
    let instantiated = tokio::select! {
        biased;
        result = pre.instantiate_async(&mut store) => result.map_err(|e| {
            let kind = store.data_mut().call.violation.take().unwrap_or(FailureKind::Unavailable);
            DeliveryFailure { blame: Blame::Plugin, kind, message: format!("cannot instantiate the plugin: {e:#}") }
        }),
        kind = watchdog(&clock, cpu, wall) => Err(DeliveryFailure { blame: Blame::Plugin, message: over_budget(&kind, cpu, wall), kind }),
    };
    store.data_mut().call = CallState::default();
    Ok(Instance { bindings: instantiated?, store, uses: 0 })
}

/// A call's CPU budget and wall bound. Load-time calls do no I/O, so their wall bound is their
/// budget and a second for scheduling; a delivery's allows every request its full timeout.
fn bounds(limits: &Limits, phase: Phase) -> (Duration, Duration) {
    /// Describing a plugin or checking a configuration takes microseconds: a budget raised for
    /// deliveries (large groups) never lets a load-time call hold up a start or a check longer.
    const MAX_LOAD_CPU: Duration = Duration::from_secs(1);
    match phase {
        Phase::Load => {
            let cpu = limits.cpu().min(MAX_LOAD_CPU);
            (cpu, cpu + Duration::from_secs(1))
        }
        Phase::Deliver => (limits.cpu(), limits.call_timeout()),
    }
}

/// Resolves once the call has used its CPU budget (`cpu` of the plugin's own time, host
/// requests excluded) or its wall bound, whichever comes first; with the kind of failure.
/// Asleep in between: it wakes when the budget would be used up if the plugin ran on from now.
async fn watchdog(clock: &CallClock, cpu: Duration, wall: Duration) -> FailureKind {
    let wall_deadline = clock.started + wall;
    loop {
        let guest = clock.guest_time();
        if guest > cpu {
            return FailureKind::CpuDeadline;
        }
        let now = Instant::now();
        if now >= wall_deadline {
            return FailureKind::Timeout;
        }
        // A nanosecond past the budget, so that waking on time finds it used.
        let next = (now + (cpu - guest) + Duration::from_nanos(1)).min(wall_deadline);
        tokio::time::sleep_until(next.into()).await;
    }
}

/// The operator's message for a call the watchdog stopped.
fn over_budget(kind: &FailureKind, cpu: Duration, wall: Duration) -> String {
    match kind {
        FailureKind::CpuDeadline => format!(
            "the plugin ran past its CPU budget of {} ms (time blocked outside host requests counts too) and was stopped",
            cpu.as_millis()
        ),
        _ => format!("the plugin call did not finish within {} ms", wall.as_millis()),
    }
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
    /// The instance's linear memories together, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory_bytes
    }

    /// Run `deliver` under the call limits.
    pub async fn deliver(&mut self, config: &types::Config, notification: &types::Notification) -> CallOutcome<types::DeliveryReport> {
        let outcome = self
            .call(Phase::Deliver, async |store, bindings| bindings.belfry_receiver_plugin().call_deliver(store, config, notification).await)
            .await;
        let secrets = &self.store.data().grants.secrets;
        CallOutcome {
            result: outcome.result.and_then(|r| match r {
                Ok(report) => Ok(types::DeliveryReport { remote_id: report.remote_id.map(|id| plugin_text(&id, secrets)), ..report }),
                Err(e) => Err(plugin_error(e, secrets)),
            }),
            reusable: outcome.reusable,
            usage: outcome.usage,
        }
    }

    /// Run `validate-config` under the load-time bound, without capabilities; what the plugin
    /// says is bounded, escaped and masked.
    pub async fn validate_config(&mut self, config: &types::Config) -> Result<Result<(), Vec<types::ConfigError>>, DeliveryFailure> {
        let result = self
            .call(Phase::Load, async |store, bindings| bindings.belfry_receiver_plugin().call_validate_config(store, config).await)
            .await
            .result?;
        let secrets = &self.store.data().grants.secrets;
        Ok(result.map_err(|errors| {
            errors
                .into_iter()
                .take(MAX_PLUGIN_ITEMS)
                .map(|e| types::ConfigError { field: plugin_text(&e.field, secrets), message: plugin_text(&e.message, secrets) })
                .collect()
        }))
    }

    /// Run `describe` under the load-time bound, without capabilities; its strings bounded and escaped.
    pub async fn describe(&mut self) -> Result<types::PluginInfo, DeliveryFailure> {
        let info =
            self.call(Phase::Load, async |store, bindings| bindings.belfry_receiver_plugin().call_describe(store).await).await.result?;
        let none = Redactor::default();
        let text = |s: &str| plugin_text(s, &none);
        Ok(types::PluginInfo {
            name: info.name,
            version: text(&info.version),
            description: text(&info.description),
            config_schema: info
                .config_schema
                .into_iter()
                .take(MAX_PLUGIN_ITEMS)
                .map(|f| types::ConfigField { name: text(&f.name), description: text(&f.description), ..f })
                .collect(),
            uses_text: info.uses_text,
        })
    }

    async fn call<T>(&mut self, phase: Phase, f: impl AsyncFnOnce(&mut Store<State>, &Bindings) -> wasmtime::Result<T>) -> CallOutcome<T> {
        self.uses += 1;
        let (call, clock) = CallState::new(phase);
        self.store.data_mut().call = call;
        self.store.set_epoch_deadline(1);
        let (cpu, wall) = bounds(&self.store.data().grants.limits, phase);
        let result = tokio::select! {
            biased;
            result = f(&mut self.store, &self.bindings) => Ok(result),
            kind = watchdog(&clock, cpu, wall) => Err(kind),
        };
        let call = std::mem::take(&mut self.store.data_mut().call);
        let usage = Usage { guest_time: clock.guest_time(), memory_bytes: self.store.data().memory_bytes };
        let stopped = |kind: FailureKind, message: String| CallOutcome {
            result: Err(DeliveryFailure { blame: Blame::Plugin, kind, message }),
            reusable: false,
            usage,
        };
        match result {
            Ok(Ok(value)) => CallOutcome { result: Ok(value), reusable: true, usage },
            Ok(Err(error)) => match call.violation.unwrap_or(FailureKind::Trap) {
                kind @ FailureKind::CpuDeadline => stopped(kind.clone(), over_budget(&kind, cpu, wall)),
                kind @ FailureKind::MemoryLimit => {
                    let mib = self.store.data().grants.limits.memory_mib;
                    stopped(kind, format!("the plugin tried to use more than {mib} MiB of memory and was stopped"))
                }
                kind => stopped(kind, format!("the plugin trapped: {}", trap_summary(&error))),
            },
            Err(kind) => stopped(kind.clone(), over_budget(&kind, cpu, wall)),
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
    DeliveryFailure { blame, kind, message: plugin_text(&message, secrets) }
}

/// The most bytes of any one string a plugin returns (a message, a remote id, a config error, a
/// line of its schema) that the host keeps: enough for any service's error, and a plugin that
/// returns megabytes cannot grow the log, the audit trail or the daemon's memory with them.
pub const MAX_PLUGIN_TEXT: usize = 4096;

/// The most config errors or schema fields of a plugin's answer the host keeps.
const MAX_PLUGIN_ITEMS: usize = 256;

/// A string a plugin returned, made safe to show: secrets masked, cut at [`MAX_PLUGIN_TEXT`]
/// bytes (marked with `…`), and control characters escaped (`\n`, `\u{1b}`), so it can neither
/// forge a log line nor drive a terminal. Only the head is ever scanned: a secret that starts
/// within the kept part ends within what is masked.
pub fn plugin_text(text: &str, secrets: &Redactor) -> String {
    let head = &text[..floor_char_boundary(text, MAX_PLUGIN_TEXT + secrets.longest())];
    let masked = secrets.redact(head);
    let mut out = String::with_capacity(masked.len().min(MAX_PLUGIN_TEXT) + 8);
    let mut cut = head.len() < text.len();
    for c in masked.chars() {
        if out.len() >= MAX_PLUGIN_TEXT {
            cut = true;
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut {
        out.push('…');
    }
    out
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0)
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
    fn a_secret_is_masked_in_the_forms_a_request_carries_it_in() {
        use ::base64::Engine;
        use ::base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let password = "pa55/w+rd ok";
        let r = Redactor::new([password.to_string()]);
        // `Authorization: Basic base64(user:password)`, as a service echoes it in a 401 body.
        let basic = STANDARD.encode(format!("u:{password}"));
        let echoed = format!("401 Unauthorized: got authorization: Basic {basic} for user u");
        assert_eq!(r.redact(&echoed), "401 Unauthorized: got authorization: Basic *** for user u");
        // Inside a longer base64 value, at each alignment, standard and URL-safe.
        for prefix in ["", "x", "xy", "xyz"] {
            for encoded in [STANDARD.encode(format!("{prefix}{password}!")), URL_SAFE_NO_PAD.encode(format!("{prefix}{password}!"))] {
                let masked = r.redact(&format!("token={encoded}"));
                assert!(masked.contains("***"), "{prefix:?}: {masked}");
                // Only the groups that mix the secret's first or last bytes with its neighbours stay.
                let left = masked.trim_start_matches("token=").replace("***", "");
                assert!(left.len() <= 8, "at most a boundary group on each side stays: {masked}");
            }
        }
        // Percent-encoded (either case) and form-encoded, and JSON-escaped.
        assert_eq!(r.redact("?p=pa55%2Fw%2Brd%20ok&x=1"), "?p=***&x=1");
        assert_eq!(r.redact("?p=pa55%2fw%2brd%20ok"), "?p=***");
        assert_eq!(r.redact("p=pa55%2Fw%2Brd+ok"), "p=***");
        let r = Redactor::new(["say \"hi\"".to_string()]);
        assert_eq!(r.redact(r#"{"echo":"say \"hi\""}"#), r#"{"echo":"***"}"#);
        // Ordinary words stay readable.
        let r = Redactor::new(["hunter22".to_string()]);
        assert_eq!(r.redact("notification delivered to receiver"), "notification delivered to receiver");
    }

    #[test]
    fn plugin_text_is_bounded_escaped_and_masked() {
        let r = Redactor::new(["s3cr3t-value".to_string()]);
        let huge = "E".repeat(60 << 20);
        let kept = plugin_text(&huge, &r);
        assert!(kept.len() <= MAX_PLUGIN_TEXT + '…'.len_utf8() && kept.ends_with('…'), "{}", kept.len());
        assert_eq!(plugin_text("line one\nlevel=ERROR forged\u{1b}[2J\r\u{7}", &r), "line one\\nlevel=ERROR forged\\u{1b}[2J\\r\\u{7}");
        // A secret straddling the cap is masked, not cut in half.
        let straddling = format!("{}s3cr3t-value", "x".repeat(MAX_PLUGIN_TEXT - 4));
        let kept = plugin_text(&straddling, &r);
        assert!(!kept.contains("s3cr"), "{}", &kept[kept.len() - 16..]);
        assert_eq!(plugin_text("short and fine", &r), "short and fine");
    }

    #[test]
    fn the_memory_cap_applies_to_all_of_an_instances_memories_together() {
        let grants = Arc::new(Grants {
            tenant: "t".into(),
            receiver: "r".into(),
            plugin: "p".into(),
            limits: Limits { memory_mib: 64, ..Limits::default() },
            http: None,
            smtp: None,
            secrets: Redactor::default(),
        });
        let mut state = State {
            memory_cap: grants.limits.memory_bytes(),
            grants,
            call: CallState::default(),
            memory_bytes: 0,
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        const MIB: usize = 1 << 20;
        // Two memories of 40 MiB each: 80 MiB together, over the 64 MiB cap.
        assert!(state.memory_growing(0, 40 * MIB, None).is_ok());
        assert!(state.memory_growing(0, 40 * MIB, None).is_err(), "the second memory would take the instance past its cap");
        assert_eq!(state.call.violation, Some(FailureKind::MemoryLimit));
        // Growing one memory counts only the growth.
        assert!(state.memory_growing(40 * MIB, 60 * MIB, None).is_ok());
        assert_eq!(state.memory_bytes, 60 * MIB);
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
