//! HTTP to domain and back: the listener, the request router, JSON errors. No alerting logic lives here.

mod acks;
mod alerts;
mod conn;
mod health;
mod respond;
mod silences;
mod status;

use serde::Deserialize;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::tenant::{Tenant, Tenants};

/// What the API needs from the daemon: the current tenants, and a way to reload them.
pub trait Reload: Send + Sync {
    /// Re-read the configuration; the number of tenants, or every problem found.
    fn reload(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<usize, String>> + Send + '_>>;
    /// The tenants now in effect.
    fn tenants(&self) -> Arc<Tenants>;
    /// Every metric, in Prometheus' text format.
    fn metrics(&self) -> String;
}

pub use conn::Timeouts;
pub use respond::{Body, error, json};

/// What the API handlers need.
pub struct App {
    /// The daemon: tenants and reload.
    pub daemon: Arc<dyn Reload>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long a request's body may take to arrive once its headers are in.
    pub body_read_timeout: std::time::Duration,
    /// Idle and header-read timeouts of each connection.
    pub timeouts: Timeouts,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// When the daemon started (for `/api/v2/status`).
    pub started: chrono::DateTime<chrono::Utc>,
    /// Checks acknowledge links (set once the store is loaded).
    pub ack_links: Arc<std::sync::OnceLock<crate::ack::AckLinks>>,
}

/// Serve `app` on `listener` until `shutdown` resolves: at most `max_connections` at once, each
/// closed when idle or slow to send its headers (see [`conn`]).
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(app.max_connections.max(1)));
    let mut saturated = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                saturated = false;
                slot
            }
            Err(_) => {
                if !saturated {
                    saturated = true;
                    tracing::warn!(
                        max_connections = app.max_connections,
                        "open connections reached [server] max_connections; new ones wait in the listen backlog until one closes"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => return,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let exchange = conn::Exchange::new(app.timeouts);
            let io = conn::Timed::new(stream, exchange.clone());
            let service = service_fn({
                let exchange = exchange.clone();
                move |req| {
                    let (app, exchange) = (app.clone(), exchange.clone());
                    exchange.started();
                    async move {
                        let response = route(&app, req).await;
                        exchange.answered();
                        Ok::<_, Infallible>(response)
                    }
                }
            });
            let connection = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(io), service);
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                setting = exchange.expired() => tracing::debug!(%peer, setting, "connection closed: idle or slow past its timeout"),
            }
        });
    }
}

/// The longest request target answered: beyond it a 414 with a JSON body (real clients send a
/// few hundred bytes; Alertmanager's filters fit easily).
const MAX_URI_BYTES: usize = 8 << 10;

/// Endpoints and the methods they accept.
const ENDPOINTS: [(&str, &[Method]); 17] = [
    ("/api/v2/alerts", &[Method::GET, Method::POST]),
    ("/api/v2/alerts/groups", &[Method::GET]),
    ("/api/belfry/v1/alertmanager", &[Method::POST]),
    ("/api/belfry/v1/events", &[Method::POST]),
    ("/api/v2/silences", &[Method::GET, Method::POST]),
    ("/api/v2/silence/{id}", &[Method::GET, Method::DELETE]),
    ("/api/v2/status", &[Method::GET]),
    ("/api/v2/receivers", &[Method::GET]),
    ("/api/belfry/v1/receivers", &[Method::GET]),
    ("/api/belfry/v1/acks", &[Method::GET, Method::POST, Method::DELETE]),
    ("/api/belfry/v1/ack/{token}", &[Method::GET, Method::POST]),
    ("/api/belfry/v1/oncall", &[Method::GET]),
    ("/api/belfry/v1/config", &[Method::GET]),
    ("/-/healthy", &[Method::GET, Method::HEAD]),
    ("/-/ready", &[Method::GET, Method::HEAD]),
    ("/-/reload", &[Method::POST]),
    ("/metrics", &[Method::GET]),
];

async fn route(app: &App, req: Request<Incoming>) -> Response<Body> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return error(StatusCode::URI_TOO_LONG, format!("the request target is {uri_len} bytes, over the {MAX_URI_BYTES} answered"));
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    // `/api/v2/silence/{id}` is the one endpoint with a parameter in its path.
    let silence_id = path.strip_prefix("/api/v2/silence/").filter(|id| !id.is_empty() && !id.contains('/')).map(str::to_string);
    let ack_token = path.strip_prefix(crate::ack::LINK_PATH).filter(|t| !t.is_empty() && !t.contains('/')).map(str::to_string);
    let endpoint = match (&silence_id, &ack_token) {
        (Some(_), _) => "/api/v2/silence/{id}",
        (_, Some(_)) => "/api/belfry/v1/ack/{token}",
        _ => path.as_str(),
    };
    match ENDPOINTS.iter().find(|(p, _)| *p == endpoint) {
        None => return error(StatusCode::NOT_FOUND, format!("no endpoint at {path}")),
        Some((_, methods)) if !methods.contains(&method) => {
            return error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}"));
        }
        Some(_) => {}
    }
    // Health needs no tenant, as in Alertmanager (load balancers probe it).
    if path == "/-/healthy" || path == "/-/ready" {
        return health::ok();
    }
    let tenants = app.daemon.tenants();
    // An acknowledge link authenticates itself: it is signed for one tenant's one group.
    if let Some(token) = ack_token {
        let links = app.ack_links.get();
        if method == Method::POST {
            let form = match read_body(req, app).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            return acks::link(&tenants, links, &token, acks::LinkVisit::Confirm { form: &form }).await;
        }
        let cookie = req.headers().get(hyper::header::COOKIE).and_then(|v| v.to_str().ok());
        return acks::link(&tenants, links, &token, acks::LinkVisit::Open { cookie }).await;
    }
    // Metrics name every tenant and receiver: only for admins once tokens are in use.
    if path == "/metrics" {
        if !tenants.is_admin(req.headers()) {
            return error(StatusCode::FORBIDDEN, "metrics need an admin token ([server] admin_tokens)".into());
        }
        return Response::builder()
            .status(StatusCode::OK)
            .header(hyper::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(Full::new(Bytes::from(app.daemon.metrics())))
            .expect("static response parts are valid");
    }
    if path == "/-/reload" {
        if !tenants.is_admin(req.headers()) {
            return error(StatusCode::FORBIDDEN, "reloading needs an admin token ([server] admin_tokens)".into());
        }
        return match app.daemon.reload().await {
            Ok(count) => json(StatusCode::OK, &serde_json::json!({ "status": "success", "tenants": count })),
            Err(problems) => {
                error(StatusCode::BAD_REQUEST, format!("reload refused, the previous configuration stays in effect:\n{problems}"))
            }
        };
    }
    let tenant: Arc<Tenant> = match tenants.authenticate(req.headers()) {
        Ok(tenant) => tenant,
        Err(e) => {
            let mut response = error(StatusCode::UNAUTHORIZED, e.to_string());
            response.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    let span = tracing::info_span!("api", tenant = %tenant.name, method = %method, path = %path);
    tracing::Instrument::instrument(handle(app, req, &tenant, &path, &method, silence_id.as_deref()), span).await
}

/// A tenant's request, once authenticated.
async fn handle(
    app: &App,
    req: Request<Incoming>,
    tenant: &Tenant,
    path: &str,
    method: &Method,
    silence_id: Option<&str>,
) -> Response<Body> {
    let notifier = &tenant.notifier;
    match (path, method) {
        ("/api/v2/alerts", &Method::POST) => match read_body(req, app).await {
            Ok(body) => alerts::post(notifier, &body).await,
            Err(response) => response,
        },
        ("/api/v2/alerts", _) => off_the_runtime(notifier, req.uri().query(), alerts::get).await,
        ("/api/v2/alerts/groups", _) => off_the_runtime(notifier, req.uri().query(), alerts::groups).await,
        ("/api/belfry/v1/alertmanager", _) => match read_body(req, app).await {
            Ok(body) => alerts::post_alertmanager_webhook(notifier, &body).await,
            Err(response) => response,
        },
        ("/api/belfry/v1/events", _) => match read_body(req, app).await {
            Ok(body) => alerts::post_event(notifier, &body).await,
            Err(response) => response,
        },
        ("/api/v2/silences", &Method::POST) => match read_body(req, app).await {
            Ok(body) => silences::post(notifier, &body).await,
            Err(response) => response,
        },
        ("/api/v2/silences", _) => silences::list(notifier, req.uri().query()),
        (_, &Method::GET) if silence_id.is_some() => silences::get(notifier, silence_id.unwrap_or_default()),
        (_, &Method::DELETE) if silence_id.is_some() => silences::delete(notifier, silence_id.unwrap_or_default()).await,
        ("/api/v2/status", _) => status::status(notifier, app.started),
        ("/api/v2/receivers", _) => status::receivers(notifier),
        ("/api/belfry/v1/receivers", _) => status::receiver_health(notifier),
        ("/api/belfry/v1/oncall", _) => status::on_call(notifier, req.uri().query()),
        ("/api/belfry/v1/config", _) => status::config(notifier),
        ("/api/belfry/v1/acks", &Method::POST) => match read_body(req, app).await {
            Ok(body) => acks::post(notifier, &body).await,
            Err(response) => response,
        },
        ("/api/belfry/v1/acks", &Method::DELETE) => acks::delete(notifier, req.uri().query()).await,
        ("/api/belfry/v1/acks", _) => acks::list(notifier),
        _ => unreachable!("every endpoint in ENDPOINTS is handled"),
    }
}

/// Answer a listing that may run the tenant's routing script (an alert's receivers) on the
/// blocking pool, so that a slow script never holds up the async workers.
async fn off_the_runtime(
    notifier: &Arc<crate::dispatch::Notifier>,
    query: Option<&str>,
    answer: fn(&crate::dispatch::Notifier, Option<&str>) -> Response<Body>,
) -> Response<Body> {
    let (notifier, query) = (notifier.clone(), query.map(str::to_string));
    tokio::task::spawn_blocking(move || answer(&notifier, query.as_deref()))
        .await
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "listing the alerts failed; retry".into()))
}

/// The request's whole body, within `max_body_bytes` (refused from `Content-Length` before any
/// of it is read) and `body_read_timeout`.
async fn read_body(req: Request<Incoming>, app: &App) -> Result<Bytes, Response<Body>> {
    let limit = app.max_body_bytes;
    let too_large = || error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds {limit} bytes; send fewer alerts per request"));
    let announced = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(app.body_read_timeout, Limited::new(req.into_body(), limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {} s ([server] body_read_timeout)", app.body_read_timeout.as_secs()),
        )),
    }
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API. Port 0 picks a free port (printed at start).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL users reach Belfry at, sent to plugins for links back. Defaults to `http://<listen>`.
    #[serde(default)]
    pub external_url: Option<String>,
    /// Largest accepted request body.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Take the tenant from the `X-Scope-OrgID` header (Mimir's convention). Only for a
    /// listener that a trusted authenticating proxy fronts: anyone who can reach it can claim
    /// any tenant.
    #[serde(default)]
    pub trust_scope_org_id: bool,
    /// Tokens (`sha256:<hex>`) allowed to call `POST /-/reload` when tenants have tokens. In a
    /// setup without any token, reload is open, as in Alertmanager.
    #[serde(default)]
    pub admin_tokens: Vec<String>,
    /// How long the acknowledge links in notifications work (default 7 days).
    #[serde(default = "default_ack_link_ttl", with = "humantime_serde")]
    pub ack_link_ttl: Duration,
    /// A new connection, or a request that has begun, must finish its headers within this.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request's body must arrive within this once its headers are in (else 408).
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections open at once; beyond it new ones wait in the listen backlog (logged). Keep
    /// it well under the process's file-descriptor limit (`ulimit -n`): plugins' outbound
    /// connections and the store need descriptors too.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            external_url: None,
            max_body_bytes: default_max_body_bytes(),
            trust_scope_org_id: false,
            admin_tokens: Vec::new(),
            ack_link_ttl: default_ack_link_ttl(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_listen() -> SocketAddr {
    // Alertmanager's port, so Prometheus configs that point at :9093 work unchanged.
    SocketAddr::from(([127, 0, 0, 1], 9093))
}

fn default_max_body_bytes() -> usize {
    // Prometheus sends at most `max_alerts_per_request`... its default batch of 64 alerts fits easily.
    4 << 20
}

fn default_ack_link_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_header_read_timeout() -> Duration {
    // A client sends its headers in one write; 10 s covers a congested link.
    Duration::from_secs(10)
}

fn default_body_read_timeout() -> Duration {
    // A 4 MiB body at 150 KB/s.
    Duration::from_secs(30)
}

fn default_idle_timeout() -> Duration {
    // Longer than Prometheus' default evaluation interval (1 m), so its connection is reused.
    Duration::from_secs(90)
}

fn default_max_connections() -> usize {
    // Under the common 1,024-descriptor soft limit with room for the rest; start raises the
    // soft limit to the hard one where it can (as Go's runtime does).
    768
}
