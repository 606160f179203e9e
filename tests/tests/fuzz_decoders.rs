//! Property tests of every decoder of outside input: no input makes one panic, and what is valid decodes faithfully.

use std::collections::BTreeMap;

use belfry::config::{Config, parse_token_hash};
use belfry::ingest::TenantLimits;
use belfry::ingest::{decode_alertmanager_webhook, decode_event, decode_postable_alerts};
use belfry::matcher::Matcher;
use belfry::silence::PostableSilence;
use proptest::prelude::*;

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z").unwrap().with_timezone(&chrono::Utc)
}

/// JSON that is often almost an alert batch: the interesting inputs for a decoder.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-zA-Z_0-9:. -]{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("0001-01-01T00:00:00Z")),
        Just(serde_json::Value::from("2026-11-23T10:00:00Z")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("labels".to_string()),
                    Just("annotations".to_string()),
                    Just("startsAt".to_string()),
                    Just("endsAt".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn label_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,10}"
}

proptest! {
    #[test]
    fn alert_decoder_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_postable_alerts(&body, now(), &TenantLimits::default());
    }

    #[test]
    fn alert_decoder_never_panics_on_json(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        if let Err(e) = decode_postable_alerts(&body, now(), &TenantLimits::default()) {
            prop_assert!(!e.path.is_empty() && !e.message.is_empty());
        }
    }

    #[test]
    fn webhook_and_event_decoders_never_panic(value in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let body = serde_json::to_vec(&serde_json::json!({ "alerts": [value.clone()] })).unwrap();
        let _ = decode_alertmanager_webhook(&body, now(), &TenantLimits::default());
        let _ = decode_alertmanager_webhook(&bytes, now(), &TenantLimits::default());
        let _ = decode_event(&serde_json::to_vec(&value).unwrap(), now(), &TenantLimits::default());
        let _ = decode_event(&bytes, now(), &TenantLimits::default());
    }

    #[test]
    fn valid_alerts_decode_faithfully(
        labels in prop::collection::btree_map(label_name(), ".{0,20}", 1..8),
        annotations in prop::collection::btree_map(label_name(), ".{0,40}", 0..4),
    ) {
        let body = serde_json::json!([{ "labels": labels, "annotations": annotations }]).to_string();
        let alerts = decode_postable_alerts(body.as_bytes(), now(), &TenantLimits::default()).unwrap();
        prop_assert_eq!(&alerts[0].labels, &labels);
        prop_assert_eq!(&alerts[0].annotations, &annotations);
        // The fingerprint depends on the label set only, not on the order it was written in.
        let reversed: BTreeMap<String, String> = labels.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(belfry::alert::Fingerprint::of(&reversed), alerts[0].fingerprint());
    }

    #[test]
    fn matcher_parser_never_panics(s in ".{0,40}") {
        let _ = Matcher::parse(&s);
    }

    #[test]
    fn matchers_round_trip_through_display(name in label_name(), op in 0..4usize, value in "[a-zA-Z0-9 _.-]{0,12}") {
        let op = ["=", "!=", "=~", "!~"][op];
        let m = Matcher::parse(&format!("{name}{op}{}", serde_json::to_string(&value).unwrap())).unwrap();
        prop_assert_eq!(Matcher::parse(&m.to_string()).unwrap(), m);
    }

    #[test]
    fn silence_decoder_never_panics(value in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_value::<PostableSilence>(value);
        let _ = serde_json::from_slice::<PostableSilence>(&bytes);
    }

    #[test]
    fn config_parser_never_panics(text in "[\\[\\]a-z_=\"0-9. \n{},]{0,200}") {
        let _ = Config::parse(&text);
    }

    #[test]
    fn token_hash_parser_never_panics(s in ".{0,80}") {
        let _ = parse_token_hash(&s);
    }
}
