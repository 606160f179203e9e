//! `POST /api/v2/alerts`: decode, route, hand every notification to the dispatcher.

use chrono::Utc;
use hyper::{Response, StatusCode};

use super::{App, Body, error};
use crate::dispatch::{Delivery, single_alert_notification};

/// Accept a batch of postable alerts. All or nothing: a bad alert rejects the whole request
/// before anything is dispatched, so a client can fix and resend it.
pub fn post(app: &App, body: &[u8]) -> Response<Body> {
    let now = Utc::now();
    let alerts = match crate::ingest::decode_postable_alerts(body, now) {
        Ok(alerts) => alerts,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut deliveries = Vec::with_capacity(alerts.len());
    for alert in &alerts {
        for receiver_name in app.router.route(alert).receivers {
            let Some(receiver) = app.receivers.get(&receiver_name) else {
                tracing::error!(receiver = %receiver_name, "route names a receiver that does not exist");
                continue;
            };
            let notification = single_alert_notification(&app.tenant, &receiver_name, alert, &app.external_url, now);
            deliveries.push(Delivery { receiver: receiver.clone(), notification });
        }
    }
    if app.dispatcher.submit_all(deliveries).is_err() {
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "the delivery queue is full; retry shortly".into());
        response.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
        return response;
    }
    Response::builder().status(StatusCode::OK).body(Body::default()).expect("static response")
}
