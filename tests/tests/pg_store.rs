//! The store on PostgreSQL, against a real PostgreSQL 15 started on loopback (scripts/engines): every kind of record round-trips, the latest write wins, a commit is durable across the engine's kill -9, and a commit while the engine is down fails, naming the engine and never its password.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use belfry::cluster::{PgStore, PgStoreOptions};
use belfry::store::{Op, Store, Table};

const INITDB: &str = "/usr/lib/postgresql/15/bin/initdb";

/// A PostgreSQL server in a temporary directory, stopped on drop.
struct Postgres {
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    /// `None` (the test says it skipped) where PostgreSQL is not installed; scripts/test installs it.
    fn start() -> Option<Postgres> {
        if !Path::new(INITDB).exists() {
            println!("SKIPPED: PostgreSQL 15 is not installed (apt-get install postgresql; scripts/test does)");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("belfry-pg").tempdir_in("/tmp").unwrap().keep();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let postgres = Postgres { dir, port };
        postgres.engines("start-postgres");
        Some(postgres)
    }

    fn engines(&self, command: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/engines");
        let mut run = Command::new("bash");
        run.arg(script).arg(command).arg(&self.dir);
        if command.starts_with("start") {
            run.arg(self.port.to_string());
        }
        assert!(run.status().unwrap().success(), "scripts/engines {command} {}", self.dir.display());
    }

    /// `kill -9` the server and its backends (a backend outlives its postmaster for a moment,
    /// and would still answer its connection), and wait until they are gone.
    fn kill_9(&self) {
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_string();
        let children = Command::new("pgrep").args(["-P", &pid]).output().unwrap().stdout;
        let mut pids: Vec<String> = String::from_utf8_lossy(&children).split_whitespace().map(str::to_string).collect();
        assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success(), "the postmaster is running");
        // A backend may have exited on its own since pgrep listed it: that one needs no kill.
        for child in &pids {
            let _ = Command::new("kill").args(["-9", child]).stderr(std::process::Stdio::null()).status();
        }
        pids.push(pid);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(p)) {
            assert!(std::time::Instant::now() < deadline, "postgres did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn options(&self) -> PgStoreOptions {
        PgStoreOptions {
            connection: format!("host=127.0.0.1 port={} user=belfry dbname=postgres password=Zx9s3cretPW", self.port),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/engines");
        let _ = Command::new("bash").arg(script).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_zombie(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

/// (tenant, id, value) of every record of `table`, sorted.
fn records(store: &PgStore, table: Table) -> Vec<(String, String, String)> {
    let snapshot = store.load().unwrap();
    let mut out: Vec<_> = snapshot
        .records(table)
        .iter()
        .map(|r| (r.tenant.clone(), r.id_text(), belfry::store::decode::<String>(&r.value).unwrap()))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_record_round_trips_and_the_latest_write_wins() {
    let Some(postgres) = Postgres::start() else { return };
    let store = tokio::task::block_in_place(|| PgStore::connect(&postgres.options())).unwrap();
    for table in Table::ALL.into_iter().filter(|t| *t != Table::Meta) {
        // Within one batch and across batches, in submission order, the latest write wins.
        let batch = vec![Op::put(table, "a", b"k1", &"v1"), Op::put(table, "a", b"k1", &"v2"), Op::put(table, "b", b"k1", &"other")];
        store.submit(batch).await.unwrap().unwrap();
        store.submit(vec![Op::put(table, "a", b"k2", &"gone"), Op::delete(table, "a", b"k2")]).await.unwrap().unwrap();
    }
    store.submit_background(vec![Op::put_meta("ack_link_key", vec![7; 32])]);
    store.submit(vec![]).await.unwrap().unwrap();
    for table in Table::ALL.into_iter().filter(|t| *t != Table::Meta) {
        let expected = [("a".to_string(), "k1".to_string(), "v2".to_string()), ("b".into(), "k1".into(), "other".into())];
        assert_eq!(tokio::task::block_in_place(|| records(&store, table)), expected, "{table:?}");
    }
    // Another connection (another replica) sees the same records.
    drop(store);
    let other = tokio::task::block_in_place(|| PgStore::connect(&postgres.options())).unwrap();
    let snapshot = tokio::task::block_in_place(|| other.load()).unwrap();
    let meta = snapshot.records(Table::Meta);
    assert_eq!((meta[0].tenant.as_str(), meta[0].id_text(), meta[0].value.clone()), ("", "ack_link_key".to_string(), vec![7; 32]));
    assert_eq!(snapshot.records(Table::Alerts).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resolved_commit_survives_the_engines_kill_9_and_a_commit_while_it_is_down_fails() {
    let Some(postgres) = Postgres::start() else { return };
    let store = tokio::task::block_in_place(|| PgStore::connect(&postgres.options())).unwrap();
    let batch: Vec<Op> = (0..500).map(|i| Op::put(Table::Alerts, "t", format!("fp{i:04}").as_bytes(), &format!("alert {i}"))).collect();
    store.submit(batch).await.unwrap().unwrap();
    postgres.kill_9();
    // The engine is gone: a commit fails (the API will answer 503), naming the engine and never
    // the password of the connection string.
    let failed = store.submit(vec![Op::put(Table::Alerts, "t", b"late", &"x")]).await.unwrap().unwrap_err().to_string();
    assert!(failed.contains(&format!("postgres 127.0.0.1:{}", postgres.port)), "{failed}");
    assert!(!failed.contains("Zx9s3cretPW"), "{failed}");
    drop(store);
    // Restarted on its data: everything committed before the kill is there.
    postgres.engines("start-postgres");
    let store = tokio::task::block_in_place(|| PgStore::connect(&postgres.options())).unwrap();
    let stored = tokio::task::block_in_place(|| records(&store, Table::Alerts));
    assert_eq!(stored.len(), 500, "every alert of the resolved commit");
    assert_eq!(stored[499], ("t".to_string(), "fp0499".to_string(), "alert 499".to_string()));
    // A connection string that does not reach the engine is refused at connect, without the password.
    let mut unreachable = postgres.options();
    unreachable.connection = unreachable.connection.replace(&postgres.port.to_string(), "1");
    let refused = tokio::task::block_in_place(|| PgStore::connect(&unreachable)).err().expect("nothing listens on port 1").to_string();
    assert!(refused.contains("cannot connect") && !refused.contains("Zx9s3cretPW"), "{refused}");
}
