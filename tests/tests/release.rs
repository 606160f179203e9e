//! The profile-guided release build's training workload (`scripts/release`), run small against the test build: every phase completes, and the daemon stops cleanly on SIGTERM, which is when an instrumented build writes its profile.

use belfry_tests::pgo::train;

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

#[tokio::test]
async fn the_pgo_training_workload_delivers_mutes_resolves_and_stops_the_daemon_cleanly() {
    let training = train(BIN, 300).await;
    assert!(training.clean_exit, "the daemon failed on SIGTERM");
    // 300 unique alerts, 200 steady ones, at least one notification per grouped set, 30 resolves.
    assert!(training.delivered >= 300 + 200 + 2 + 30, "{training:?}");
    assert_eq!(training.resolved, 30, "{training:?}");
    assert_eq!(training.silenced, 0, "the silence let alerts through: {training:?}");
}
