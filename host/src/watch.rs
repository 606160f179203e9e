//! Reloads a tenant's routing script when its file changes: inotify on the scripts' directories, debounced, then compile, self-test and swap.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Editors write a file in several steps (truncate, write, rename): wait this long after the
/// first event for the rest.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Watches the directories of the live routing scripts.
pub struct ScriptWatcher {
    inner: Mutex<(notify::RecommendedWatcher, HashSet<PathBuf>)>,
}

impl ScriptWatcher {
    /// A watcher that sends the paths of changed files to `changed`.
    pub fn new(changed: mpsc::UnboundedSender<PathBuf>) -> notify::Result<ScriptWatcher> {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_create() || event.kind.is_modify() {
                for path in event.paths {
                    let _ = changed.send(path);
                }
            }
        })?;
        Ok(ScriptWatcher { inner: Mutex::new((watcher, HashSet::new())) })
    }

    /// Watch exactly the directories holding `scripts` (called after each reload).
    pub fn watch(&self, scripts: impl IntoIterator<Item = PathBuf>) {
        let wanted: HashSet<PathBuf> = scripts.into_iter().filter_map(|p| p.parent().map(|d| d.to_path_buf())).collect();
        let mut inner = self.inner.lock().expect("watcher lock");
        let (watcher, watched) = &mut *inner;
        for dir in watched.difference(&wanted) {
            let _ = watcher.unwatch(dir);
        }
        for dir in wanted.difference(watched) {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a routing script directory; reload with SIGHUP instead");
            }
        }
        *watched = wanted;
    }
}

/// Receives changed paths, debounces them, and hands each to `reload` (the daemon reloads the
/// routing scripts among them).
pub async fn reload_changed_scripts(reload: impl Fn(&std::path::Path), mut changed: mpsc::UnboundedReceiver<PathBuf>) {
    while let Some(first) = changed.recv().await {
        tokio::time::sleep(DEBOUNCE).await;
        let mut paths = HashSet::from([first]);
        while let Ok(more) = changed.try_recv() {
            paths.insert(more);
        }
        for path in paths {
            reload(&path);
        }
    }
}
