//! `--watch`: reload the rule files when they change on disk. The folders
//! that hold them are watched with inotify (through `notify`), so an
//! editor's write-then-rename is seen too; where inotify cannot watch (some
//! network mounts), the files' modification times are polled instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::Watcher;
use tokio::sync::mpsc;

use crate::appliance::Appliance;
use crate::events::{now_rfc3339, Event, EventSink, ReloadEvent};
use crate::rules::RuleSet;

/// How often files are polled where inotify is not available.
const POLL: Duration = Duration::from_millis(250);
/// An editor may write in several steps; changes this close together are
/// one reload.
const SETTLE: Duration = Duration::from_millis(50);

fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// A change notification for the rule files: from inotify when it can
/// watch their folders, else from polling.
fn watcher(
    files: &[PathBuf],
) -> (
    Option<notify::RecommendedWatcher>,
    mpsc::UnboundedReceiver<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let names: Vec<PathBuf> = files.iter().map(|f| absolute(f)).collect();
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev.paths.iter().any(|p| names.iter().any(|n| n == p)) {
                let _ = tx.send(());
            }
        }
    };
    let mut w = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!("inotify unavailable ({e}); polling the rule files");
            return (None, rx);
        }
    };
    for dir in files.iter().map(|f| parent(&absolute(f))) {
        if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::debug!(
                "cannot watch {} ({e}); polling the rule files",
                dir.display()
            );
            return (None, rx);
        }
    }
    (Some(w), rx)
}

fn absolute(f: &Path) -> PathBuf {
    std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf())
}

fn parent(f: &Path) -> PathBuf {
    f.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs until the process ends; each reload or rejection is an event.
pub async fn watch_files(files: Vec<PathBuf>, appliance: Appliance, events: EventSink) {
    let (_watcher, mut changes) = watcher(&files);
    let inotify = _watcher.is_some();
    let mut last = stamps(&files);
    loop {
        if inotify {
            if changes.recv().await.is_none() {
                return;
            }
        } else {
            tokio::time::sleep(POLL).await;
        }
        tokio::time::sleep(SETTLE).await;
        while changes.try_recv().is_ok() {}
        let now = stamps(&files);
        if now == last {
            continue;
        }
        last = now;
        reload(&files, &appliance, &events, "watch").await;
    }
}

/// Reads the rule files again and, if they load, swaps them in; the
/// reload (or its rejection) is an event, and is returned.
pub(super) async fn reload(
    files: &[PathBuf],
    appliance: &Appliance,
    events: &EventSink,
    source: &'static str,
) -> ReloadEvent {
    // Loading and building the responders may take long: off the data
    // plane's thread.
    let (files_, appliance_) = (files.to_vec(), appliance.clone());
    let loaded = tokio::task::spawn_blocking(move || {
        RuleSet::load(&files_).map(|set| appliance_.reload(set))
    })
    .await;
    let loaded = match loaded {
        Ok(Ok(snap)) => Ok(snap),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the reload stopped before it finished".to_string()),
    };
    let ev = match loaded {
        Ok(snap) => ReloadEvent {
            time: now_rfc3339(),
            source,
            ok: true,
            error: None,
            services: snap.rules.services.iter().map(|s| s.name.clone()).collect(),
            generation: snap.generation,
        },
        Err(e) => {
            tracing::warn!("rules not reloaded: {e}");
            ReloadEvent {
                time: now_rfc3339(),
                source,
                ok: false,
                error: Some(e),
                services: Vec::new(),
                generation: appliance.snapshot().generation,
            }
        }
    };
    events.record(Event::Reload(ev.clone()));
    ev
}
