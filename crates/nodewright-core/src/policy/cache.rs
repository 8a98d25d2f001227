//! Compiled components, cached in memory and on disk as precompiled
//! artefacts keyed by the component's sha256 and the engine's compatibility
//! hash (wasmtime version and settings), so the same component is compiled
//! once per engine configuration, ever.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::runtime::CacheStats;

/// Where a component came from when it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheOutcome {
    /// Compiled now.
    Compiled,
    /// Deserialised from the disk cache.
    Disk,
    /// Already loaded in this process.
    Memory,
}

pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
    loaded: Mutex<HashMap<String, Component>>,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory_hits: AtomicU64,
    writes: AtomicU64,
    discarded: AtomicU64,
}

/// sha256 of `bytes`, lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the full digest is read")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ComponentCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        if let Some(dir) = &dir {
            create_private_dir(dir)?;
        }
        Ok(ComponentCache {
            dir,
            engine_key,
            loaded: Mutex::new(HashMap::new()),
            compiled: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
        }
    }

    /// The compiled form of `bytes` (whose sha256 is `digest`).
    pub(crate) fn get(&self, engine: &Engine, digest: &str, bytes: &[u8]) -> wasmtime::Result<(Component, CacheOutcome)> {
        let key = format!("{digest}-{}", self.engine_key);
        if let Some(component) = self.loaded.lock().expect("cache lock").get(&key) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((component.clone(), CacheOutcome::Memory));
        }
        let path = self.dir.as_ref().map(|d| d.join(format!("{key}.cwasm")));
        if let Some(path) = &path
            && let Some(component) = self.read(engine, path)
        {
            self.disk_hits.fetch_add(1, Ordering::Relaxed);
            self.remember(key, &component);
            return Ok((component, CacheOutcome::Disk));
        }
        let component = Component::new(engine, bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = &path {
            match self.write(&component, path) {
                Ok(()) => {
                    self.writes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(path = %path.display(), "cannot write compiled component to the cache: {e:#}"),
            }
        }
        self.remember(key, &component);
        Ok((component, CacheOutcome::Compiled))
    }

    fn remember(&self, key: String, component: &Component) {
        self.loaded.lock().expect("cache lock").insert(key, component.clone());
    }

    /// The cached artefact at `path`, if it is there, intact, and loads.
    /// A damaged entry is removed so the next load compiles afresh.
    fn read(&self, engine: &Engine, path: &Path) -> Option<Component> {
        // No checksum beside it (written by an older nodewright, or a write
        // that did not finish): a miss, compiled and written afresh.
        let expected = std::fs::read_to_string(checksum_path(path)).ok()?;
        let artefact = std::fs::read(path).ok()?;
        if expected.trim() != checksum(&artefact) {
            self.discard(path, "checksum does not match");
            return None;
        }
        // SAFETY: the artefact was written by `write` below with this
        // engine's compatibility hash in its name, into a directory created
        // private to this user, and its CRC-32 and length match the checksum written
        // beside it, so it is the output of `Component::serialize` (wasmtime
        // additionally checks its header and engine settings).
        // Mapping the file (rather than deserialising the bytes read) lets
        // wasmtime use it in place: code and memory images are mapped
        // copy-on-write instead of copied, which is most of a large
        // component's load time.
        drop(artefact);
        #[allow(unsafe_code, reason = "deserialising our own precompiled artefacts is the point of the cache")]
        let loaded = unsafe { Component::deserialize_file(engine, path) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                self.discard(path, &format!("{e:#}"));
                None
            }
        }
    }

    fn discard(&self, path: &Path, why: &str) {
        tracing::warn!(path = %path.display(), "discarding cached component: {why}");
        self.discarded.fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(checksum_path(path));
    }

    /// Write atomically: a reader sees the whole artefact or none.
    fn write(&self, component: &Component, path: &Path) -> anyhow::Result<()> {
        let artefact = component.serialize()?;
        let dir = path.parent().expect("cache paths have a directory");
        let mut tmp = tempfile_in(dir)?;
        std::io::Write::write_all(&mut tmp.1, &artefact)?;
        tmp.1.sync_all()?;
        std::fs::write(checksum_path(path), checksum(&artefact))?;
        std::fs::rename(&tmp.0, path)?;
        Ok(())
    }
}

/// The artefact's checksum: CRC-32 guards against a damaged or truncated
/// file (the directory is private to the user, so it need not resist
/// forgery), and at 10+ GB/s it keeps a cached 37 MB Python artefact's load
/// fast where a sha256 cost 30 ms.
fn checksum(artefact: &[u8]) -> String {
    format!("crc32:{:08x}:{}", crc32fast::hash(artefact), artefact.len())
}

fn checksum_path(path: &Path) -> PathBuf {
    path.with_extension("cwasm.crc32")
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(".tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let path = dir.join(name);
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
