//! An in-memory cluster: what the simulator and the tests run controllers on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Cluster, ClusterError, Eviction, NodeClaim};
use crate::cloud::Instance;
use crate::model::{Catalog, NodePool, PdbStatus, Pod, PodDisruptionBudget, PodSpec};
use crate::scheduling::{ExistingNode, node_labels};

#[derive(Default)]
struct State {
    pools: Vec<NodePool>,
    daemonsets: Vec<PodSpec>,
    pending: BTreeMap<String, Pod>,
    nodes: BTreeMap<String, ExistingNode>,
    claims: BTreeMap<String, NodeClaim>,
    /// Bound pods: name → (node, pod).
    bound: BTreeMap<String, (String, Pod)>,
    events: Vec<(String, String)>,
    pdbs: Vec<PodDisruptionBudget>,
}

impl State {
    /// Move bound pod `pod` back to pending (its controller recreated it).
    fn unbind_to_pending(&mut self, pod: &str) {
        if let Some((node, p)) = self.bound.remove(pod) {
            if let Some(n) = self.nodes.get_mut(&node)
                && let Some(i) = n.pods.iter().position(|s| Arc::ptr_eq(s, &p.spec))
            {
                n.pods.swap_remove(i);
            }
            self.pending.insert(pod.into(), p);
        }
    }

    /// `status.disruptionsAllowed` of `pdb`: bound pods are healthy, pending
    /// ones (evicted and not yet back) are expected but down.
    fn allowed(&self, pdb: &PodDisruptionBudget) -> u32 {
        let healthy = self.bound.values().filter(|(_, p)| pdb.selector.matches(&p.spec.labels)).count() as u32;
        let down = self.pending.values().filter(|p| pdb.selector.matches(&p.spec.labels)).count() as u32;
        pdb.disruptions_allowed(healthy, healthy + down)
    }
}

/// An in-memory [`Cluster`].
pub struct SimulatedCluster {
    catalog: Arc<Catalog>,
    state: Mutex<State>,
}

impl SimulatedCluster {
    /// A cluster with `pools` whose nodes are bought from `catalog`.
    pub fn new(catalog: Arc<Catalog>, pools: Vec<NodePool>) -> Self {
        SimulatedCluster { catalog, state: Mutex::new(State { pools, ..State::default() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("cluster lock")
    }

    /// Add daemonsets.
    pub fn add_daemonset(&self, spec: PodSpec) {
        self.state().daemonsets.push(spec);
    }

    /// Add a PodDisruptionBudget.
    pub fn add_pdb(&self, pdb: PodDisruptionBudget) {
        self.state().pdbs.push(pdb);
    }

    /// Replace the NodePools (an edit: nodes made under the old ones drift).
    pub fn set_node_pools(&self, pools: Vec<NodePool>) {
        self.state().pools = pools;
    }

    /// Add pending pods.
    pub fn add_pods(&self, pods: impl IntoIterator<Item = Pod>) {
        let mut state = self.state();
        for pod in pods {
            state.pending.insert(pod.name.clone(), pod);
        }
    }

    /// Add a node that already exists.
    pub fn add_node(&self, node: ExistingNode) {
        self.state().nodes.insert(node.name.clone(), node);
    }

    /// Bind pending pod `pod` to node (or launched claim) `node`.
    pub fn bind(&self, pod: &str, node: &str) -> Result<(), ClusterError> {
        let mut state = self.state();
        let spec = state.pending.get(pod).ok_or_else(|| ClusterError(format!("pod {pod} is not pending")))?.spec.clone();
        let target = state.nodes.get_mut(node).ok_or_else(|| ClusterError(format!("node {node} does not exist")))?;
        target.pods.push(spec);
        if let Some(p) = state.pending.remove(pod) {
            state.bound.insert(pod.into(), (node.into(), p));
        }
        Ok(())
    }

    /// Turn launched claim `claim` into a registered node.
    pub fn register(&self, claim: &str) -> Result<(), ClusterError> {
        let mut state = self.state();
        let c = state.claims.get(claim).ok_or_else(|| ClusterError(format!("NodeClaim {claim} does not exist")))?;
        let instance = c.instance.clone().ok_or_else(|| ClusterError(format!("NodeClaim {claim} is not launched")))?;
        let pool = state
            .pools
            .iter()
            .find(|p| p.name == c.node_pool)
            .cloned()
            .ok_or_else(|| ClusterError(format!("NodePool {} does not exist", c.node_pool)))?;
        let offering = &self.catalog.offerings[instance.offering as usize];
        let node = ExistingNode {
            name: claim.into(),
            node_pool: Some(pool.name.clone()),
            labels: Arc::new(node_labels(offering, &pool, claim)),
            taints: pool.taints.clone(),
            allocatable: offering.allocatable,
            capacity: offering.capacity,
            pods: state.daemonsets.clone().into_iter().map(Arc::new).collect(),
            schedulable: true,
        };
        state.nodes.insert(claim.into(), node);
        if let Some(c) = state.claims.get_mut(claim) {
            c.initialized = true;
        }
        Ok(())
    }

    /// Remove a pending pod (it ended before it was bound).
    pub fn remove_pending(&self, pod: &str) -> bool {
        self.state().pending.remove(pod).is_some()
    }

    /// Remove bound pod `pod` of spec `spec` from node `node` (it ended).
    pub fn unbind(&self, pod: &str, node: &str, spec: &Arc<PodSpec>) -> bool {
        let mut state = self.state();
        state.bound.remove(pod);
        let Some(target) = state.nodes.get_mut(node) else { return false };
        match target.pods.iter().position(|p| Arc::ptr_eq(p, spec)) {
            Some(i) => {
                target.pods.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Remove node `node` and its NodeClaim (the instance is gone).
    pub fn remove_node(&self, node: &str) {
        let mut state = self.state();
        state.nodes.remove(node);
        state.claims.remove(node);
        state.bound.retain(|_, (n, _)| n != node);
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<ExistingNode> {
        self.state().nodes.get(name).cloned()
    }

    /// NodeClaims, by name.
    pub fn node_claims(&self) -> Vec<NodeClaim> {
        self.state().claims.values().cloned().collect()
    }

    /// Names of pending pods.
    pub fn pending_names(&self) -> Vec<String> {
        self.state().pending.keys().cloned().collect()
    }

    /// (pod, reason) events recorded so far.
    pub fn events(&self) -> Vec<(String, String)> {
        self.state().events.clone()
    }
}

impl Cluster for SimulatedCluster {
    async fn node_pools(&self) -> Result<Vec<NodePool>, ClusterError> {
        Ok(self.state().pools.clone())
    }

    async fn daemonsets(&self) -> Result<Vec<PodSpec>, ClusterError> {
        Ok(self.state().daemonsets.clone())
    }

    async fn pending_pods(&self) -> Result<Vec<Pod>, ClusterError> {
        Ok(self.state().pending.values().cloned().collect())
    }

    async fn nodes(&self) -> Result<Vec<ExistingNode>, ClusterError> {
        let state = self.state();
        let mut nodes: Vec<ExistingNode> = state.nodes.values().cloned().collect();
        for claim in state.claims.values() {
            if state.nodes.contains_key(&claim.name) {
                continue;
            }
            let Some(instance) = &claim.instance else { continue };
            let Some(pool) = state.pools.iter().find(|p| p.name == claim.node_pool) else { continue };
            let offering = &self.catalog.offerings[instance.offering as usize];
            nodes.push(ExistingNode {
                name: claim.name.clone(),
                node_pool: Some(pool.name.clone()),
                labels: Arc::new(node_labels(offering, pool, &claim.name)),
                taints: pool.taints.clone(),
                allocatable: offering.allocatable,
                capacity: offering.capacity,
                pods: state.daemonsets.clone().into_iter().map(Arc::new).collect(),
                schedulable: true,
            });
        }
        Ok(nodes)
    }

    async fn create_node_claim(&self, claim: NodeClaim) -> Result<(), ClusterError> {
        let mut state = self.state();
        if state.claims.contains_key(&claim.name) {
            return Err(ClusterError(format!("NodeClaim {} already exists", claim.name)));
        }
        state.claims.insert(claim.name.clone(), claim);
        Ok(())
    }

    async fn claim_launched(&self, claim: &str, instance: Instance) -> Result<(), ClusterError> {
        let mut state = self.state();
        let c = state.claims.get_mut(claim).ok_or_else(|| ClusterError(format!("NodeClaim {claim} does not exist")))?;
        c.instance = Some(instance);
        Ok(())
    }

    async fn delete_node_claim(&self, claim: &str) -> Result<(), ClusterError> {
        let mut state = self.state();
        state.claims.remove(claim).ok_or_else(|| ClusterError(format!("NodeClaim {claim} does not exist")))?;
        state.nodes.remove(claim);
        state.bound.retain(|_, (n, _)| n != claim);
        Ok(())
    }

    async fn node_claims(&self) -> Result<Vec<NodeClaim>, ClusterError> {
        Ok(self.state().claims.values().cloned().collect())
    }

    async fn pods_on(&self, node: &str) -> Result<Vec<Pod>, ClusterError> {
        Ok(self.state().bound.values().filter(|(n, _)| n == node).map(|(_, p)| p.clone()).collect())
    }

    async fn cordon(&self, node: &str) -> Result<(), ClusterError> {
        if let Some(n) = self.state().nodes.get_mut(node) {
            n.schedulable = false;
        }
        Ok(())
    }

    async fn drain(&self, node: &str) -> Result<Vec<String>, ClusterError> {
        let mut state = self.state();
        let evicted: Vec<String> = state.bound.iter().filter(|(_, (n, _))| n == node).map(|(p, _)| p.clone()).collect();
        for pod in &evicted {
            state.unbind_to_pending(pod);
        }
        Ok(evicted)
    }

    async fn bound_pods(&self) -> Result<Vec<(String, Pod)>, ClusterError> {
        Ok(self.state().bound.values().cloned().collect())
    }

    async fn pod_disruption_budgets(&self) -> Result<Vec<PdbStatus>, ClusterError> {
        let state = self.state();
        Ok(state.pdbs.iter().map(|pdb| PdbStatus { budget: pdb.clone(), disruptions_allowed: state.allowed(pdb) }).collect())
    }

    async fn evict(&self, pod: &str) -> Result<Eviction, ClusterError> {
        let mut state = self.state();
        let (_, p) = state.bound.get(pod).ok_or_else(|| ClusterError(format!("pod {pod} is not bound to a node")))?;
        let labels = p.spec.labels.clone();
        if let Some(pdb) = state.pdbs.iter().find(|b| b.selector.matches(&labels) && state.allowed(b) == 0) {
            return Ok(Eviction::Blocked { pdb: pdb.name.clone() });
        }
        state.unbind_to_pending(pod);
        Ok(Eviction::Evicted)
    }

    async fn uncordon(&self, node: &str) -> Result<(), ClusterError> {
        if let Some(n) = self.state().nodes.get_mut(node) {
            n.schedulable = true;
        }
        Ok(())
    }

    async fn pod_unschedulable(&self, pod: &str, reason: &str) -> Result<(), ClusterError> {
        self.state().events.push((pod.into(), reason.into()));
        Ok(())
    }
}
