//! What every endpoint answers with: a JSON body, or a JSON error in Alertmanager's shape.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

/// A response body.
pub type Body = Full<Bytes>;

/// A JSON error in Alertmanager's shape: `{"code": 400, "message": "..."}`.
pub fn error(status: StatusCode, message: String) -> Response<Body> {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    json(status, &body)
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("API answers serialize (string keys, no failing Serialize impls)");
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
