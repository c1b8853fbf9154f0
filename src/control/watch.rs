//! `--watch`: reload the rule files when they change on disk. Polls the
//! files' modification times (no inotify needed, works on any mount).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::appliance::Appliance;
use crate::events::{now_rfc3339, Event, EventSink, ReloadEvent};
use crate::rules::RuleSet;

const POLL: Duration = Duration::from_millis(250);

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

/// Runs until the process ends; each reload or rejection is an event.
pub async fn watch_files(files: Vec<PathBuf>, appliance: Appliance, events: EventSink) {
    let mut last = stamps(&files);
    loop {
        tokio::time::sleep(POLL).await;
        if stamps(&files) == last {
            continue;
        }
        // An editor may write in several steps; let it finish.
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = stamps(&files);
        let ev = match RuleSet::load(&files) {
            Ok(set) => {
                let snap = appliance.reload(set);
                ReloadEvent {
                    time: now_rfc3339(),
                    source: "watch",
                    ok: true,
                    error: None,
                    services: snap.rules.services.iter().map(|s| s.name.clone()).collect(),
                    generation: snap.generation,
                }
            }
            Err(e) => {
                tracing::warn!("rules not reloaded: {e}");
                ReloadEvent {
                    time: now_rfc3339(),
                    source: "watch",
                    ok: false,
                    error: Some(e.to_string()),
                    services: Vec::new(),
                    generation: appliance.snapshot().generation,
                }
            }
        };
        events.record(Event::Reload(ev));
    }
}
