//! Watch caches: one reflector per kind the controllers read (pods, nodes,
//! daemonsets, PDBs, NodePools, NodeClaims), so a controller pass reads
//! memory instead of listing every object from the API server.
//!
//! A cache lags the server by the watch's latency, and the controller must
//! not act twice on its own write (a NodeClaim it created a moment ago and
//! the watch has not delivered would look like missing capacity, and be
//! launched again). So every object the controller writes is remembered
//! ([`Recent`]) and read in place of the cached copy until the watch has
//! caught up with it.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::crd;

/// Reflector stores of everything the controllers read; the watches run
/// until the cache is dropped.
pub struct KubeCache {
    /// Pods not in a terminal phase.
    pub pods: Store<core::Pod>,
    /// Nodes.
    pub nodes: Store<core::Node>,
    /// DaemonSets (overhead on every new node).
    pub daemonsets: Store<DaemonSet>,
    /// PodDisruptionBudgets.
    pub pdbs: Store<PodDisruptionBudget>,
    /// NodePools.
    pub node_pools: Store<crd::NodePool>,
    /// NodeClaims, as the watch last delivered them (reads lay the
    /// controller's own recent writes over these).
    pub node_claims: Store<crd::NodeClaim>,
    pub(super) recent_claims: Recent<crd::NodeClaim>,
    pub(super) recent_nodes: Recent<core::Node>,
    changed: Arc<Notify>,
    /// Events delivered by every watch so far.
    events: Arc<AtomicU64>,
    /// Aborted on drop.
    _watches: Mutex<JoinSet<()>>,
}

/// Pods in a terminal phase are not watched: they hold no capacity.
pub(super) const LIVE_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

impl KubeCache {
    /// Start the watches (on the current tokio runtime).
    pub fn start(client: &Client) -> Self {
        let mut watches = JoinSet::new();
        let changed = Arc::new(Notify::new());
        let events = Arc::new(AtomicU64::new(0));
        let count = || events.clone();
        let pods = watch(&mut watches, Api::all(client.clone()), watcher::Config::default().fields(LIVE_PODS), count(), Some(changed.clone()));
        let nodes = watch(&mut watches, Api::all(client.clone()), watcher::Config::default(), count(), Some(changed.clone()));
        let daemonsets = watch(&mut watches, Api::all(client.clone()), watcher::Config::default(), count(), None);
        let pdbs = watch(&mut watches, Api::all(client.clone()), watcher::Config::default(), count(), None);
        let node_pools = watch(&mut watches, Api::all(client.clone()), watcher::Config::default(), count(), Some(changed.clone()));
        let node_claims = watch(&mut watches, Api::all(client.clone()), watcher::Config::default(), count(), None);
        KubeCache {
            pods,
            nodes,
            daemonsets,
            pdbs,
            node_pools,
            node_claims,
            recent_claims: Recent::default(),
            recent_nodes: Recent::default(),
            changed,
            events,
            _watches: Mutex::new(watches),
        }
    }

    /// Once every watch has listed its kind (the stores are complete).
    pub async fn wait_until_ready(&self) {
        // The writers live as long as the watch tasks, which live as long as
        // `self`: the waits cannot fail while it is borrowed.
        let _ = futures::join!(
            self.pods.wait_until_ready(),
            self.nodes.wait_until_ready(),
            self.daemonsets.wait_until_ready(),
            self.pdbs.wait_until_ready(),
            self.node_pools.wait_until_ready(),
            self.node_claims.wait_until_ready(),
        );
    }

    /// A change counter over everything the cache holds (see
    /// `Cluster::revision`): the events every watch has delivered. `None`
    /// while the controller's own writes are laid over the cache (they
    /// expire on a timer, not an event).
    pub fn revision(&self) -> Option<u64> {
        let held = self.recent_claims.holds() || self.recent_nodes.holds();
        (!held).then(|| self.events.load(Ordering::Relaxed))
    }

    /// Wakes when a pod, node or NodePool changes: a pass may have work.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }
}

/// One reflector on its own task; `changed` is notified on every event.
fn watch<K>(watches: &mut JoinSet<()>, api: Api<K>, config: watcher::Config, delivered: Arc<AtomicU64>, changed: Option<Arc<Notify>>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).to_string();
    // Managed fields are most of an object's bytes and nothing reads them.
    let events = watcher(api, config).modify(|o: &mut K| o.meta_mut().managed_fields = None).default_backoff();
    let stream = reflector::reflector(writer, events);
    watches.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(changed) = &changed {
                        changed.notify_one();
                    }
                }
                // The backoff retries; the store keeps its last state.
                Err(e) => tracing::warn!(kind, "watch: {e}"),
            }
        }
    });
    reader
}

/// How long a written object is preferred to the cached copy at most: a
/// watch that has not delivered it by then has failed, and the store's
/// relist is the truth.
const HOLD: Duration = Duration::from_secs(30);

/// Objects the controller wrote (or deleted), by name, read in place of the
/// cache's copy until the cache holds that version or a later one.
pub(super) struct Recent<K> {
    writes: Mutex<HashMap<String, Written<K>>>,
}

/// When an object was written, and what the server answered (`None`:
/// deleted).
type Written<K> = (Instant, Option<Arc<K>>);

impl<K> Default for Recent<K> {
    fn default() -> Self {
        Recent { writes: Mutex::new(HashMap::new()) }
    }
}

impl<K: Resource + Clone> Recent<K> {
    /// The API server answered a create or update with `object`.
    pub(super) fn wrote(&self, object: K) {
        self.writes.lock().expect("recent writes").insert(object.name_any(), (Instant::now(), Some(Arc::new(object))));
    }

    /// Whether any write is still laid over the cache.
    pub(super) fn holds(&self) -> bool {
        !self.writes.lock().expect("recent writes").is_empty()
    }

    /// `name` was deleted.
    pub(super) fn deleted(&self, name: &str) {
        self.writes.lock().expect("recent writes").insert(name.to_string(), (Instant::now(), None));
    }

    /// The cache's objects with the controller's own writes laid over them.
    pub(super) fn merge(&self, cached: Vec<Arc<K>>) -> Vec<Arc<K>> {
        let mut writes = self.writes.lock().expect("recent writes");
        writes.retain(|_, (at, _)| at.elapsed() < HOLD);
        if writes.is_empty() {
            return cached;
        }
        let names: HashSet<String> = cached.iter().map(|o| o.name_any()).collect();
        let mut out = Vec::with_capacity(cached.len() + writes.len());
        for object in cached {
            let name = object.name_any();
            match writes.get(&name) {
                None => out.push(object),
                // Deleted here; the watch has not said so yet.
                Some((_, None)) => {}
                Some((_, Some(ours))) if caught_up(object.as_ref(), ours.as_ref()) => {
                    writes.remove(&name);
                    out.push(object);
                }
                Some((_, Some(ours))) => out.push(ours.clone()),
            }
        }
        writes.retain(|name, (_, ours)| match ours {
            // The cache no longer has it: the deletion has arrived.
            None => names.contains(name),
            Some(ours) => {
                if !names.contains(name) {
                    // Created here; not delivered yet.
                    out.push(ours.clone());
                }
                true
            }
        });
        out
    }
}

/// Whether `cached` is the version written or a later one. Resource
/// versions are opaque, but every API server issues etcd revisions, which
/// are numbers; anything else compares only for equality.
fn caught_up<K: Resource>(cached: &K, ours: &K) -> bool {
    let (a, b) = (cached.meta().resource_version.as_deref(), ours.meta().resource_version.as_deref());
    match (a.and_then(|v| v.parse::<u64>().ok()), b.and_then(|v| v.parse::<u64>().ok())) {
        (Some(a), Some(b)) => a >= b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, rv: &str, unschedulable: bool) -> Arc<core::Node> {
        let mut n = core::Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.resource_version = Some(rv.into());
        n.spec = Some(core::NodeSpec { unschedulable: Some(unschedulable), ..Default::default() });
        Arc::new(n)
    }

    fn view(objects: &[Arc<core::Node>]) -> Vec<(String, String)> {
        let mut v: Vec<_> =
            objects.iter().map(|n| (n.name_any(), n.metadata.resource_version.clone().unwrap_or_default())).collect();
        v.sort();
        v
    }

    #[test]
    fn own_writes_are_read_until_the_cache_catches_up_and_deletions_hide_until_delivered() {
        let recent = Recent::default();
        // a was cordoned here (rv 7) while the cache still holds rv 5; c was
        // created here; b was deleted here.
        recent.wrote((*node("a", "7", true)).clone());
        recent.wrote((*node("c", "9", false)).clone());
        recent.deleted("b");
        let cached = vec![node("a", "5", false), node("b", "6", false)];
        assert_eq!(view(&recent.merge(cached)), [("a".into(), "7".into()), ("c".into(), "9".into())]);
        // The watch delivers a at rv 8 (a later write by someone else), c,
        // and b's deletion: the cache is the truth again and nothing is held.
        let cached = vec![node("a", "8", true), node("c", "9", false)];
        assert_eq!(view(&recent.merge(cached.clone())), [("a".into(), "8".into()), ("c".into(), "9".into())]);
        assert!(recent.writes.lock().unwrap().is_empty());
        assert_eq!(view(&recent.merge(cached)), [("a".into(), "8".into()), ("c".into(), "9".into())]);
    }

    #[test]
    fn opaque_resource_versions_compare_for_equality_only() {
        assert!(caught_up(&*node("a", "x1", false), &*node("a", "x1", false)));
        assert!(!caught_up(&*node("a", "x2", false), &*node("a", "x1", false)));
        assert!(caught_up(&*node("a", "12", false), &*node("a", "9", false)));
        assert!(!caught_up(&*node("a", "9", false), &*node("a", "12", false)));
    }
}
