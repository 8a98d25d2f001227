//! A watched directory as a plugin source: `NAME.wasm` is loaded into slot
//! `NAME` (with `NAME.json` beside it as its config, if present) whenever
//! either file is written. Files are read whole after writes settle.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::plugin::Plugin;
use super::registry::{PolicyRegistry, Role, SlotMode};

/// How long a file must be quiet before it is loaded.
const SETTLE: Duration = Duration::from_millis(200);

/// Watches a directory and swaps plugins into the registry; stops when dropped.
pub struct DirectoryWatch {
    _watcher: notify::RecommendedWatcher,
    _worker: std::thread::JoinHandle<()>,
}

/// The result of loading one file, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// The slot now runs the file's component.
    Swapped {
        /// Slot name.
        slot: String,
        /// New digest.
        digest: String,
    },
    /// The file was rejected; the slot is unchanged.
    Rejected {
        /// Slot name.
        slot: String,
        /// Why, naming the file.
        reason: String,
    },
}

impl DirectoryWatch {
    /// Load every `*.wasm` in `dir` now, then watch it. `on_event` is told
    /// of each load.
    pub fn start(
        dir: &Path,
        registry: Arc<PolicyRegistry>,
        on_event: impl Fn(WatchEvent) + Send + 'static,
    ) -> notify::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && (event.kind.is_create() || event.kind.is_modify())
            {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
        })?;
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        let mut existing: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        existing.sort();
        for path in &existing {
            on_event(load(&registry, path));
        }
        let worker = std::thread::Builder::new()
            .name("nodewright-plugin-watch".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut pending = BTreeSet::from([first]);
                    while let Ok(more) = rx.recv_timeout(SETTLE) {
                        pending.insert(more);
                    }
                    let components: BTreeSet<PathBuf> = pending
                        .into_iter()
                        .filter_map(|p| match p.extension().and_then(|e| e.to_str()) {
                            Some("wasm") => Some(p),
                            Some("json") => Some(p.with_extension("wasm")),
                            _ => None,
                        })
                        .filter(|p| p.is_file())
                        .collect();
                    for path in components {
                        on_event(load(&registry, &path));
                    }
                }
            })?;
        Ok(DirectoryWatch { _watcher: watcher, _worker: worker })
    }
}

/// Load `path` into the slot named after it. The slot's role is kept if it
/// exists; otherwise it follows the component (a `policy` component selects).
fn load(registry: &PolicyRegistry, path: &Path) -> WatchEvent {
    let slot = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    let reject = |reason: String| {
        tracing::warn!(slot, "{reason}");
        WatchEvent::Rejected { slot: slot.clone(), reason }
    };
    let config_path = path.with_extension("json");
    let config = match std::fs::read_to_string(&config_path) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(_) => text,
            Err(e) => return reject(format!("{}: invalid JSON: {e}", config_path.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "{}".into(),
        Err(e) => return reject(format!("{}: cannot read: {e}", config_path.display())),
    };
    let plugin = match Plugin::from_file(registry.runtime(), path, &config) {
        Ok(plugin) => Arc::new(plugin),
        Err(e) => {
            if let Some(existing) = registry.slot(&slot) {
                existing.record_rejection(&e);
            }
            return reject(e.to_string());
        }
    };
    let role = registry.slot(&slot).map(|s| s.role()).unwrap_or(if plugin.info().world.selects() {
        Role::Selection
    } else {
        Role::Consolidation
    });
    match registry.ensure_slot(&slot, role).propose(plugin, SlotMode::Active) {
        Ok(outcome) => WatchEvent::Swapped { slot, digest: outcome.digest },
        Err(e) => reject(e.to_string()),
    }
}
