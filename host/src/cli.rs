//! The `belfry` command line: `serve`, `route test`, `plugin inspect`, `token`, and `dev-sink` for trying plugins locally.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::config::Config;
use crate::plugin::{Runtime, RuntimeOptions};
use crate::serve::{self, StartError};

/// Belfry: a multi-tenant alert-notification host with sandboxed WebAssembly channel plugins.
#[derive(Parser)]
#[command(name = "belfry", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: accept alerts on the Alertmanager API and deliver them.
    Serve {
        /// The configuration file (TOML), or the directory holding `belfry.toml`.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a whole configuration before deploying it: TOML, cross-references, plugins and
    /// their pins, every receiver's config (validated by its plugin), every routing script and
    /// its self-tests. Prints every problem as `file:line: ...` and exits 2, or 0 when clean.
    Check {
        /// The configuration file, or the directory holding `belfry.toml`.
        #[arg(long, short)]
        config: PathBuf,
        /// Check only this tenant directory (its tenant.toml, script and templates, wherever
        /// it is checked out) against the configuration's plugins, keys and limits, in place
        /// of the platform's copy of that tenant: a tenant's own CI.
        #[arg(long, value_name = "DIR")]
        tenant: Option<PathBuf>,
    },
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Make a new random API token and print it with the `sha256:` line for the config.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Work with a tenant's routing.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Make master keys, encrypt secrets for the config, rotate them to a new key.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Preview notifications before deploying templates.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Work with the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A local HTTP endpoint that prints every request it receives: a stand-in webhook target.
    DevSink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9099")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Show where an alert goes: receivers, grouping and timings (like `amtool config routes test`).
    Test {
        /// The configuration file, or the directory holding `belfry.toml`.
        #[arg(long, short)]
        config: PathBuf,
        /// The tenant whose script routes the alert.
        #[arg(long, short, default_value = crate::config::DEFAULT_TENANT)]
        tenant: String,
        /// A JSON file with the alert (`{"labels": {...}, "annotations": {...}}`, or an array
        /// as posted to /api/v2/alerts, of which the first is used).
        #[arg(long)]
        alert: Option<PathBuf>,
        /// Route as of this time (RFC 3339), for scripts that look at the clock.
        #[arg(long)]
        at: Option<String>,
        /// Exit with status 1 unless the alert goes to exactly these receivers (comma-separated).
        #[arg(long, value_delimiter = ',')]
        verify_receivers: Option<Vec<String>>,
        /// Labels as `name=value`.
        labels: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Print a new random master key (32 bytes, base64): put it in the environment variable or
    /// file a `[secrets.keys]` entry names.
    Keygen,
    /// Read a secret from standard input and print it as `enc:v1:<key-id>:...` for the config.
    Encrypt {
        /// The configuration (its `[secrets.keys]` say where the keys are).
        #[arg(long, short)]
        config: PathBuf,
        /// The master key to encrypt under.
        #[arg(long)]
        key: String,
    },
    /// Re-encrypt every `enc:v1:` value in the configuration's files (the main file and every
    /// tenant.toml) under another key, in place. Both keys must be in `[secrets.keys]`.
    Rotate {
        /// The configuration file, or the directory holding `belfry.toml`.
        #[arg(long, short)]
        config: PathBuf,
        /// The new key id.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Render an alert file for a receiver and show the exact request its plugin would send
    /// (recorded, not sent; secrets masked).
    Render {
        /// The configuration file, or the directory holding `belfry.toml`.
        #[arg(long, short)]
        config: PathBuf,
        /// The tenant.
        #[arg(long, short, default_value = crate::config::DEFAULT_TENANT)]
        tenant: String,
        /// The receiver.
        #[arg(long, short)]
        receiver: String,
        /// A JSON file with an alert, or an array of alerts (one group), as posted to /api/v2/alerts.
        alert: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of an audit trail; name the first edited, removed or reordered record.
    Verify {
        /// The trail (`[audit] path`, by default `data/audit.jsonl` next to the config).
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new token (give it to the client) and its hash (put it in `tokens`).
    New,
    /// Print the hash of an existing token read from standard input.
    Hash,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a component and print what it says about itself: name, version, config schema.
    Inspect {
        /// The component (`.wasm`).
        path: PathBuf,
    },
}

/// Run the command line; the exit code is 2 for configuration errors, 1 for other failures.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon says what it does; a one-shot command prints its results, and logs only what
    // went wrong beside them (RUST_LOG overrides either).
    let level = if matches!(cli.command, Command::Serve { .. }) { "info" } else { "warn" };
    init_logging(cli.log_format, level);
    // Routing scripts and listings run on the blocking pool; a thread idle for a second exits,
    // and the memory its allocator heap keeps for it goes back (10 s by default).
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_keep_alive(BLOCKING_KEEP_ALIVE).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("belfry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => run_serve(config).await,
            Command::Check { config, tenant: None } => check(config).await,
            Command::Check { config, tenant: Some(dir) } => check_tenant(config, dir).await,
            Command::Plugin { command: PluginCommand::Inspect { path } } => inspect(path).await,
            Command::DevSink { listen } => dev_sink(listen).await,
            Command::Route { command: RouteCommand::Test { config, tenant, alert, at, verify_receivers, labels } } => {
                route_test(config, &tenant, alert, at, labels, verify_receivers)
            }
            Command::Token { command } => token(command),
            Command::Audit { command: AuditCommand::Verify { path } } => audit_verify(&path),
            Command::Secrets { command } => secrets(command),
            Command::Template { command: TemplateCommand::Render { config, tenant, receiver, alert } } => {
                template_render(config, &tenant, &receiver, alert).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError::Config(errors)) => {
            eprintln!("belfry: the configuration has {} problem(s):\n{errors}", errors.0.len());
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("belfry: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `belfry check`: everything a start would check, without starting.
async fn check(config: PathBuf) -> Result<(), StartError> {
    let file = config_file(config);
    // Every layer that can go on does: problems in the files, then the plugins' verdicts on
    // what remains, in one run.
    let (config, errors) = Config::load_all(&file);
    let Some(config) = config else { return Err(errors.into()) };
    let checked = match serve::check(&config, None).await {
        Ok(checked) if errors.0.is_empty() => checked,
        Ok(_) => return Err(errors.into()),
        Err(StartError::Config(later)) => return Err(errors.and_then_later(later).into()),
        Err(other) => return Err(other),
    };
    println!(
        "ok: {} — {} tenant(s), {} plugin(s), {} receiver(s) validated by their plugins, {} routing script(s) with their self-tests",
        file.display(),
        checked.tenants,
        checked.plugins,
        checked.receivers,
        checked.scripts
    );
    Ok(())
}

/// `belfry check --tenant DIR`: one tenant's directory against the platform's configuration,
/// with the messages the daemon would give. Problems of the platform's own files are the
/// platform team's (a secret its CI machine cannot resolve, another tenant's typo) and are not
/// shown, except those of the plugins the tenant's receivers need.
async fn check_tenant(config: PathBuf, dir: PathBuf) -> Result<(), StartError> {
    let file = config_file(config);
    if !dir.join("tenant.toml").is_file() {
        return Err(anyhow::anyhow!("{}: no tenant.toml here; --tenant names a tenant's directory", dir.display()).into());
    }
    let name = crate::config::tenant_name_of(&dir);
    let (config, errors) = Config::load_with_tenant(&file, &dir);
    let tenants = |errors: crate::config::ConfigErrors| {
        let theirs = |e: &crate::config::ConfigError| e.file.starts_with(&dir) || e.key.starts_with("plugins.");
        crate::config::ConfigErrors(errors.0.into_iter().filter(theirs).collect())
    };
    let Some(config) = config else { return Err(errors.into()) };
    let errors = match serve::check(&config, Some(&name)).await {
        Ok(checked) => {
            let errors = tenants(errors);
            if errors.0.is_empty() {
                println!(
                    "ok: tenant `{name}` ({}) against {} — {} receiver(s) validated by their plugins, {} routing script(s) with their self-tests",
                    dir.display(),
                    file.display(),
                    checked.receivers,
                    checked.scripts
                );
                return Ok(());
            }
            errors
        }
        Err(StartError::Config(later)) => tenants(errors.and_then_later(later)),
        Err(other) => return Err(other),
    };
    if errors.0.is_empty() {
        println!("ok: tenant `{name}` ({}) against {}", dir.display(), file.display());
        return Ok(());
    }
    Err(errors.into())
}

/// `belfry template render`.
async fn template_render(config: PathBuf, tenant: &str, receiver: &str, alert: PathBuf) -> Result<(), StartError> {
    let file = config_file(config);
    let config = Config::load(&file)?;
    let text = std::fs::read_to_string(&alert).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", alert.display()))?;
    let text = if text.trim_start().starts_with('{') { format!("[{text}]") } else { text };
    let alerts = crate::ingest::decode_postable_alerts(text.as_bytes(), chrono::Utc::now(), &config.limits)
        .map_err(|e| anyhow::anyhow!("{}: {e}", alert.display()))?;
    let preview = serve::preview(&config, tenant, receiver, alerts).await?;
    println!("── title\n{}\n── body\n{}", preview.title, preview.body);
    if !preview.uses_text {
        println!("── note: plugin `{}` does not show a title or body; they are rendered for reference only", preview.plugin);
    }
    if let Some(url) = &preview.ack_url {
        println!("── acknowledge link (ackURL; a sample with the real shape, signed with a throwaway key: it acknowledges nothing)\n{url}");
    }
    for failure in &preview.template_failures {
        println!("── template failed (the default was used): {failure}");
    }
    for (i, request) in preview.requests.iter().enumerate() {
        println!("── request {} (not sent)\n{request}", i + 1);
    }
    println!("── plugin result\n{}", preview.outcome);
    Ok(())
}

/// `belfry secrets ...`.
fn secrets(command: SecretsCommand) -> Result<(), StartError> {
    match command {
        SecretsCommand::Keygen => println!("{}", crate::secrets::new_key()),
        SecretsCommand::Encrypt { config, key } => {
            // Only the keys are needed: a config whose other secrets do not resolve here still works.
            let file = config_file(config);
            let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let keyring = keyring_of(&file, &text)?;
            let mut plain = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut plain).map_err(|e| anyhow::anyhow!("cannot read stdin: {e}"))?;
            let plain = plain.strip_suffix('\n').unwrap_or(&plain);
            println!("{}", keyring.encrypt(&key, plain).map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        SecretsCommand::Rotate { config, to } => {
            let file = config_file(config);
            let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let keyring = keyring_of(&file, &text)?;
            let mut files = vec![file.clone()];
            let parsed = Config::parse(&text).map_err(|(key, message)| anyhow::anyhow!("{}: {key}: {message}", file.display()))?;
            if let Some(dir) = &parsed.tenants.dir {
                let dir = file.parent().unwrap_or(std::path::Path::new(".")).join(dir);
                let entries = std::fs::read_dir(&dir).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
                files.extend(entries.filter_map(Result::ok).map(|e| e.path().join("tenant.toml")).filter(|p| p.is_file()));
            }
            // Every file is re-encrypted in memory first: a key that fails leaves every file untouched.
            let mut rotated = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
                let (new, count) =
                    crate::secrets::rotate_text(&text, &keyring, &to).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                rotated.push((f, new, count));
            }
            for (f, new, count) in rotated {
                if count > 0 {
                    std::fs::write(f, new).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.display()))?;
                }
                println!("{}: {count} value(s) re-encrypted under `{to}`", f.display());
            }
        }
    }
    Ok(())
}

/// The keyring of the config text `text` read from `file`.
fn keyring_of(file: &std::path::Path, text: &str) -> Result<crate::secrets::Keyring, StartError> {
    let parsed = Config::parse(text).map_err(|(key, message)| anyhow::anyhow!("{}: {key}: {message}", file.display()))?;
    let base = file.parent().unwrap_or(std::path::Path::new("."));
    crate::secrets::Keyring::load(&parsed.secrets.keys, base)
        .map_err(|(key, message)| anyhow::anyhow!("{}: {key}: {message}", file.display()).into())
}

/// `belfry audit verify`: exit 0 and print the count and last hash, or exit 1 naming the first bad line.
fn audit_verify(path: &std::path::Path) -> Result<(), StartError> {
    let verified = crate::audit::verify(path).map_err(|broken| anyhow::anyhow!("the audit trail is broken at {broken}"))?;
    println!("ok: {} records, chain intact, last hash {}", verified.records, verified.last_hash);
    Ok(())
}

/// `belfry route test`: build the tenant's router exactly as the daemon does (self-tests
/// included) and print the routes one alert takes.
fn route_test(
    config: PathBuf,
    tenant: &str,
    alert_file: Option<PathBuf>,
    at: Option<String>,
    labels: Vec<String>,
    verify: Option<Vec<String>>,
) -> Result<(), StartError> {
    use crate::route::Router;
    let config_file = config_file(config);
    let config = Config::load(&config_file)?;
    let views = config.tenants();
    let view = views.iter().find(|v| v.name == tenant).ok_or_else(|| {
        let known: Vec<&str> = views.iter().map(|v| v.name).collect();
        anyhow::anyhow!("no tenant `{tenant}` in {} (tenants: {})", config_file.display(), known.join(", "))
    })?;
    let router = Router::build(view.router_spec()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = match at {
        Some(at) => chrono::DateTime::parse_from_rfc3339(&at)
            .map_err(|e| anyhow::anyhow!("--at `{at}`: {e} (write e.g. 2026-11-23T10:00:00Z)"))?
            .with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    let mut alert = match alert_file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let text = if text.trim_start().starts_with('{') { format!("[{text}]") } else { text };
            let mut alerts = crate::ingest::decode_postable_alerts(text.as_bytes(), now, &config.limits)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if alerts.is_empty() {
                return Err(anyhow::anyhow!("{}: no alert in the file", path.display()).into());
            }
            alerts.swap_remove(0)
        }
        None => crate::alert::Alert {
            labels: Default::default(),
            annotations: Default::default(),
            starts_at: now,
            ends_at: None,
            generator_url: String::new(),
        },
    };
    for pair in &labels {
        let (name, value) = pair.split_once('=').ok_or_else(|| anyhow::anyhow!("`{pair}`: write labels as name=value"))?;
        if !crate::alert::is_valid_label_name(name) {
            return Err(anyhow::anyhow!("`{name}` is not a valid label name").into());
        }
        alert.labels.insert(name.to_string(), value.trim_matches('"').to_string());
    }
    let decision = router.route(&alert, now);
    let mut out = std::io::stdout().lock();
    let script = router.script_file().map_or("none (every alert goes to the [route] receiver)".to_string(), |p| p.display().to_string());
    let _ = writeln!(out, "tenant {tenant}, script {script}");
    let _ = writeln!(out, "alert {}", crate::alert::format_label_set(&alert.labels));
    if let Some(why) = &decision.failure {
        let _ = writeln!(out, "the script failed on this alert, so it takes the fallback route: {why}");
    }
    if decision.routes.is_empty() {
        let _ = writeln!(out, "no receiver: the script drops this alert");
    }
    for r in &decision.routes {
        let o = &r.options;
        let group_labels = o.group_by.group_labels(&alert.labels);
        let _ = writeln!(
            out,
            "{}\n  group_by [{}] -> group {}\n  group_wait {} group_interval {} repeat_interval {}{}{}{}",
            r.receiver,
            o.group_by.names().join(", "),
            crate::alert::format_label_set(&group_labels),
            humantime_serde::re::humantime::format_duration(o.group_wait),
            humantime_serde::re::humantime::format_duration(o.group_interval),
            humantime_serde::re::humantime::format_duration(o.repeat_interval),
            o.escalation.as_ref().map(|e| format!("\n  escalation {e}")).unwrap_or_default(),
            if o.mute_time_intervals.is_empty() { String::new() } else { format!("\n  muted during {}", o.mute_time_intervals.join(", ")) },
            if o.active_time_intervals.is_empty() {
                String::new()
            } else {
                format!("\n  active during {}", o.active_time_intervals.join(", "))
            },
        );
    }
    if let Some(expected) = verify {
        let got = decision.receivers();
        if got != expected {
            return Err(anyhow::anyhow!("expected receivers {expected:?}, the alert goes to {got:?}").into());
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

fn token(command: TokenCommand) -> Result<(), StartError> {
    let token = match command {
        TokenCommand::New => {
            let mut bytes = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            println!("token:  {token}");
            token
        }
        TokenCommand::Hash => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(anyhow::Error::from)?;
            line.trim().to_string()
        }
    };
    let hash: String = crate::tenant::hash_token(&token).iter().map(|b| format!("{b:02x}")).collect();
    println!("config: tokens = [\"sha256:{hash}\"]");
    Ok(())
}

async fn run_serve(config_path: PathBuf) -> Result<(), StartError> {
    let config_path = config_file(config_path);
    let config = Config::load(&config_path)?;
    let running = serve::start(config_path, &config, shutdown_signal()).await?;
    #[cfg(unix)]
    {
        // SIGHUP reloads, as for Alertmanager.
        let daemon = running.daemon.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(anyhow::Error::from)?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if let Err(e) = daemon.reload("sighup").await {
                    tracing::error!(error = %e, "reload refused; the previous configuration stays in effect");
                }
            }
        });
    }
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("belfry listening on http://{}", running.addr);
    let _ = std::io::stdout().flush();
    tracing::info!(addr = %running.addr, tenants = running.daemon.tenants().all().count(), "belfry is serving");
    running.server.await.map_err(|e| anyhow::anyhow!("the server task failed: {e}"))?;
    running.daemon.audit.flush();
    tracing::info!("belfry stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// What every `--config` names: the configuration file, or the directory holding `belfry.toml`.
fn config_file(config: PathBuf) -> PathBuf {
    if config.is_dir() { config.join("belfry.toml") } else { config }
}

/// How long an idle thread of the blocking pool waits for work before it exits.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);

async fn inspect(path: PathBuf) -> Result<(), StartError> {
    let cache_dir = std::env::temp_dir().join("belfry-inspect-cache");
    let runtime = Runtime::new(RuntimeOptions { cache_dir, allocator: Default::default(), pool_slots: 1, profiler: Default::default() })?;
    let key = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let plugin = runtime.load(&key, &path, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = &plugin.info;
    println!("{} {} — {}", info.name, info.version, info.description);
    println!("shows title and body: {}", if info.uses_text { "yes (templates are rendered for it)" } else { "no" });
    let capabilities: Vec<&str> = plugin
        .imports
        .iter()
        .filter_map(|name| name.strip_prefix("belfry:receiver/"))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|name| *name != "types")
        .collect();
    println!("imports: {} (smtp needs an [receivers.smtp] grant)", capabilities.join(", "));
    println!("sha256 {}", plugin.sha256);
    println!("config:");
    for f in &info.config_schema {
        let flags = [(f.required, "required"), (f.secret, "secret")].iter().filter(|(on, _)| *on).map(|(_, s)| *s).collect::<Vec<_>>();
        println!("  {:<22} {:<10} {:<20} {}", f.name, kind_name(f.kind), flags.join(","), f.description);
    }
    Ok(())
}

fn kind_name(kind: crate::plugin::FieldKind) -> &'static str {
    use crate::plugin::FieldKind::*;
    match kind {
        Text => "text",
        Url => "url",
        Integer => "integer",
        Boolean => "boolean",
        TextList => "text-list",
        TextMap => "text-map",
    }
}

async fn dev_sink(listen: SocketAddr) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    println!("dev-sink listening on http://{}", listener.local_addr().map_err(anyhow::Error::from)?);
    loop {
        let (stream, _) = listener.accept().await.map_err(anyhow::Error::from)?;
        tokio::spawn(async move {
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let shown = match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
                    Err(_) => String::from_utf8_lossy(&body).into_owned(),
                };
                let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("-");
                println!("--- {} {} ({content_type}, {} bytes)\n{shown}", parts.method, parts.uri, body.len());
                let _ = std::io::stdout().flush();
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
