//! `/-/healthy` and `/-/ready`, as Alertmanager serves them.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::respond::Body;

/// 200 "OK": the daemon only starts serving once its plugins are loaded and its config is valid.
pub fn ok() -> Response<Body> {
    Response::builder().status(StatusCode::OK).body(Full::new(Bytes::from_static(b"OK"))).expect("static response")
}
