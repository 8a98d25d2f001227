//! The [`Cluster`] trait on a real Kubernetes API server, through kube-rs.
//!
//! Reads come from watch caches ([`cache::KubeCache`], one reflector per
//! kind) when the cluster has one, as `nodewright run` does; without one
//! they list what they need (pending pods by field selector, nodes, bound
//! pods, daemonsets, PDBs, NodePools, NodeClaims). Writes are the smallest
//! request that does the job: a NodeClaim created with a finalizer, its
//! status patched once launched, nodes cordoned by a merge patch, pods
//! evicted through the Eviction API (which honours PodDisruptionBudgets: a
//! 429 is "blocked, try later"), Events for pods nothing can hold. The
//! lifecycle controllers' reads and writes (registrations, startup taints,
//! NodePool statuses: `lifecycle`; PolicyPlugins: `plugins`) are the
//! same kind of plain translation: no decision is made here.

pub mod cache;
pub mod crd;
pub mod convert;
pub mod lease;
mod lifecycle;
pub mod plugins;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1::PodDisruptionBudget as K8sPdb;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use nodewright_core::cluster::{
    Cluster, ClusterError, ClusterEvent, Created, EventObject, Eviction, NodeClaim, NodePoolObject, NodePoolStatus, PluginStatus, PolicyPluginObject, Recorded, Registration,
};
use nodewright_core::cloud::Instance;
use nodewright_core::model::{BoundPods, Catalog, NodePool, PdbStatus, Pod, PodSpec};
use nodewright_core::scheduling::ExistingNode;

/// Finalizer on every NodeClaim: removed only once its instance is terminated.
pub const TERMINATION_FINALIZER: &str = "nodewright.io/termination";
/// Field manager of every write.
pub const FIELD_MANAGER: &str = "nodewright";

/// A client from the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or the
/// in-cluster service account. The process's TLS provider is chosen first:
/// the AWS SDK links a second one, and rustls will not guess between two.
pub async fn default_client() -> Result<Client, kube::Error> {
    // Already chosen (a second call): the first choice stands.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default().await
}

pub(crate) fn err(what: &str) -> impl Fn(kube::Error) -> ClusterError + '_ {
    move |e| ClusterError(format!("{what}: {e}"))
}

/// `type/zone/capacity-type` of an offering, and `@` the node classes it
/// serves where it serves some only.
pub fn offering_key(catalog: &Catalog, index: u32) -> String {
    catalog.offerings.get(index as usize).map_or_else(
        || format!("#{index}"),
        |o| match &o.node_classes {
            None => format!("{}/{}/{}", o.instance_type, o.zone, o.capacity_type.label()),
            // Served to some node classes only: a reservation they select,
            // or sized for their kubelet settings.
            Some(classes) => format!("{}/{}/{}@{}", o.instance_type, o.zone, o.capacity_type.label(), classes.join(",")),
        },
    )
}

/// [`offering_key`] → catalog index, for one catalog version.
type OfferingIndex = Arc<HashMap<String, u32>>;

/// The offering `key` names in `index`; a key written under another
/// version of the catalog, when the node classes an offering serves have
/// changed since, names the first offering of its type, zone and capacity
/// type.
fn offering_at(index: &HashMap<String, u32>, key: &str) -> Option<u32> {
    index.get(key).or_else(|| key.split_once('@').and_then(|(bare, _)| index.get(bare))).copied()
}

/// A cluster behind a kube-rs [`Client`].
pub struct KubeCluster {
    client: Client,
    catalog: Arc<dyn Fn() -> Arc<Catalog> + Send + Sync>,
    /// Namespace of the controller (Events about itself, ConfigMaps of plugins).
    namespace: String,
    /// Offering keys of the last catalog version seen: NodeClaims name their
    /// offerings by key, and every pass reads every claim.
    index: std::sync::Mutex<Option<(u64, OfferingIndex)>>,
    /// Watch caches; `None`: every read lists.
    cache: Option<cache::KubeCache>,
    /// Pod annotation keys the NodePools last read name
    /// (`spec.policy.podAnnotations`): the only annotations pods keep.
    annotation_keys: std::sync::RwLock<Arc<std::collections::BTreeSet<String>>>,
    /// How long fetching a PolicyPlugin's component by URL may take.
    fetch_timeout: Duration,
    /// The PolicyPlugins last listed, by name: their sources and statuses.
    plugins: std::sync::Mutex<HashMap<String, crd::PolicyPlugin>>,
    /// Events sent lately, and when: a repeat within ten minutes is dropped.
    events_sent: std::sync::Mutex<EventLog>,
    /// The bound pods as the last read made them, reused where nothing changed.
    bound: std::sync::Mutex<BoundMemo>,
}

/// Which pods a read wants: a field selector when listing, the same
/// predicate over the cache.
#[derive(Clone, Copy)]
enum Pods<'a> {
    /// Not bound, phase Pending.
    Pending,
    /// Bound to a node, not finished.
    Bound,
    /// Bound to this node.
    On(&'a str),
}

impl Pods<'_> {
    fn fields(self) -> String {
        match self {
            Pods::Pending => "spec.nodeName=,status.phase=Pending".into(),
            Pods::Bound => format!("spec.nodeName!=,{}", cache::LIVE_PODS),
            Pods::On(node) => format!("spec.nodeName={node}"),
        }
    }

    fn matches(self, pod: &core::Pod) -> bool {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        match self {
            Pods::Pending => node.is_empty() && phase == "Pending",
            Pods::Bound => !node.is_empty() && phase != "Succeeded" && phase != "Failed",
            Pods::On(name) => node == name,
        }
    }
}

impl KubeCluster {
    /// A cluster reached through `client`; offerings are resolved against
    /// `catalog()` (the cloud's current catalog).
    pub fn new(client: Client, namespace: &str, catalog: Arc<dyn Fn() -> Arc<Catalog> + Send + Sync>) -> Self {
        KubeCluster {
            client,
            catalog,
            namespace: namespace.into(),
            index: std::sync::Mutex::new(None),
            cache: None,
            annotation_keys: Default::default(),
            fetch_timeout: plugins::DEFAULT_FETCH_TIMEOUT,
            plugins: Default::default(),
            events_sent: Default::default(),
            bound: Default::default(),
        }
    }

    /// How long fetching one PolicyPlugin component by URL may take, from
    /// the first byte sent to the last received (60 s by default).
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Reads from `cache` instead of listing.
    pub fn with_cache(mut self, cache: cache::KubeCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Pod annotation keys the NodePools last read name.
    fn annotation_keys(&self) -> Arc<std::collections::BTreeSet<String>> {
        self.annotation_keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The watch caches, if reads use them.
    pub fn cache(&self) -> Option<&cache::KubeCache> {
        self.cache.as_ref()
    }

    /// Every object of a kind: from the cache (`cached`), or listed.
    async fn read<K>(&self, cached: impl FnOnce(&cache::KubeCache) -> Vec<Arc<K>>, what: &str) -> Result<Vec<Arc<K>>, ClusterError>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        if let Some(cache) = &self.cache {
            return Ok(cached(cache));
        }
        let api: Api<K> = Api::all(self.client.clone());
        Ok(api.list(&ListParams::default()).await.map_err(err(what))?.items.into_iter().map(Arc::new).collect())
    }

    async fn pods(&self, which: Pods<'_>) -> Result<Vec<Arc<core::Pod>>, ClusterError> {
        if let Some(cache) = &self.cache {
            return Ok(cache.pods.state_filter(|p| which.matches(p)));
        }
        let api: Api<core::Pod> = Api::all(self.client.clone());
        Ok(api.list(&ListParams::default().fields(&which.fields())).await.map_err(err("list pods"))?.items.into_iter().map(Arc::new).collect())
    }

    async fn read_nodes(&self) -> Result<Vec<Arc<core::Node>>, ClusterError> {
        self.read(|c| c.recent_nodes.merge(c.nodes.state()), "list nodes").await
    }

    async fn read_claims(&self) -> Result<Vec<Arc<crd::NodeClaim>>, ClusterError> {
        self.read(|c| c.recent_claims.merge(c.node_claims.state()), "list nodeclaims").await
    }

    /// The API server's answer to a write of a node.
    fn wrote_node(&self, node: core::Node) {
        if let Some(cache) = &self.cache {
            cache.recent_nodes.wrote(node);
        }
    }

    /// The API server's answer to a write of a NodeClaim.
    fn wrote_claim(&self, claim: crd::NodeClaim) {
        if let Some(cache) = &self.cache {
            cache.recent_claims.wrote(claim);
        }
    }

    /// Node `name` was deleted.
    fn deleted_node(&self, name: &str) {
        if let Some(cache) = &self.cache {
            cache.recent_nodes.deleted(name);
        }
    }

    /// NodeClaim `name` was deleted.
    fn deleted_claim(&self, name: &str) {
        if let Some(cache) = &self.cache {
            cache.recent_claims.deleted(name);
        }
    }

    /// The offering index of `catalog`, built once per catalog version.
    fn offering_index(&self, catalog: &Catalog) -> OfferingIndex {
        let mut cached = self.index.lock().expect("offering index lock");
        match cached.as_ref() {
            Some((version, index)) if *version == catalog.version => index.clone(),
            _ => {
                let mut index = HashMap::new();
                for i in 0..catalog.offerings.len() as u32 {
                    let key = offering_key(catalog, i);
                    // A key written before the offering was served to some
                    // classes only (`type/zone/capacity-type`) names the
                    // first offering of its kind.
                    if let Some((bare, _)) = key.split_once('@') {
                        index.entry(bare.to_string()).or_insert(i);
                    }
                    index.insert(key, i);
                }
                let index: OfferingIndex = Arc::new(index);
                *cached = Some((catalog.version, index.clone()));
                index
            }
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The controller's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Node name → the NodeClaim it belongs to: by the claim's
    /// `status.nodeName` (kept after the node is gone), or by providerID
    /// for a node registration has not linked yet. In the model a managed
    /// node is named after its NodeClaim, as EC2 names the Node itself
    /// (`ip-10-0-1-23.ec2.internal`).
    async fn claims_by_node(&self) -> Result<HashMap<String, String>, ClusterError> {
        Ok(claims_by_node(&self.read_nodes().await?, &self.read_claims().await?))
    }
    /// The Node behind model node `name`: a NodeClaim's node, or `name`.
    async fn node_named(&self, name: &str) -> Result<String, ClusterError> {
        let map = self.claims_by_node().await?;
        Ok(map.into_iter().find(|(_, claim)| claim == name).map_or_else(|| name.to_string(), |(node, _)| node))
    }

    fn claims_api(&self) -> Api<crd::NodeClaim> {
        Api::all(self.client.clone())
    }

    /// Merge `patch` into NodeClaim `claim`'s status; `Recorded::ClaimGone`
    /// if there is no such claim (any more). `what` names the write in an
    /// error.
    async fn patch_claim_status(&self, claim: &str, patch: &serde_json::Value, what: &str) -> Result<Recorded, ClusterError> {
        match self.claims_api().patch_status(claim, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(patch)).await {
            Ok(patched) => {
                self.wrote_claim(patched);
                Ok(Recorded::Recorded)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Recorded::ClaimGone),
            Err(e) => Err(err(what)(e)),
        }
    }

    /// [`Self::patch_claim_status`] where a missing claim is an error.
    async fn patch_existing_claim_status(&self, claim: &str, patch: &serde_json::Value, what: &str) -> Result<(), ClusterError> {
        match self.patch_claim_status(claim, patch, what).await? {
            Recorded::Recorded => Ok(()),
            Recorded::ClaimGone => Err(ClusterError(format!("{what}: NodeClaim {claim} not found"))),
        }
    }

    fn claim_to_model(&self, c: &crd::NodeClaim) -> NodeClaim {
        let index = self.offering_index(&(self.catalog)());
        let status = c.status.clone().unwrap_or_default();
        let instance = match (&status.instance_id, status.offering.as_ref().and_then(|o| offering_at(&index, o))) {
            (Some(id), Some(offering)) => Some(Instance { id: id.clone(), claim: c.name_any(), node_pool: c.spec.node_pool.clone(), offering }),
            _ => None,
        };
        let created_at = c
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| Duration::from_secs(t.0.as_second().max(0) as u64))
            .unwrap_or_default();
        NodeClaim {
            name: c.name_any(),
            node_pool: c.spec.node_pool.clone(),
            pods: c.spec.pods.clone().into(),
            requests: nodewright_core::model::Resources {
                cpu_millis: c.spec.cpu_millis,
                memory_bytes: c.spec.memory_bytes,
                pods: c.spec.pods.len() as u32,
                gpus: c.spec.gpus,
                ephemeral_bytes: 0,
            },
            offerings: c.spec.offerings.iter().filter_map(|o| offering_at(&index, o)).collect(),
            taints: c.spec.taints.iter().filter_map(|t| convert::parse_taint(t)).collect(),
            instance,
            created_at,
            pool_hash: c.spec.node_pool_hash.clone(),
            initialized: status.conditions.iter().any(|c| c.type_ == "Initialized" && c.status == "True"),
            deleting: c.metadata.deletion_timestamp.is_some(),
            conditions: lifecycle::claim_conditions(&status.conditions),
        }
    }
}

/// [`KubeCluster::claims_by_node`] of `nodes` and `claims` already read.
fn claims_by_node(nodes: &[Arc<core::Node>], claims: &[Arc<crd::NodeClaim>]) -> HashMap<String, String> {
    let by_provider: HashMap<&str, &str> =
        nodes.iter().filter_map(|n| Some((n.spec.as_ref()?.provider_id.as_deref()?, n.metadata.name.as_deref()?))).collect();
    let mut map = HashMap::new();
    for c in claims {
        let status = c.status.as_ref();
        let node = status
            .and_then(|s| s.node_name.clone())
            .or_else(|| status.and_then(|s| s.provider_id.as_deref()).and_then(|p| by_provider.get(p)).map(|n| n.to_string()));
        if let Some(node) = node {
            map.insert(node, c.name_any());
        }
    }
    map
}

/// A NodePool object as the model's NodePool, checked by the same parser as
/// NodePool files (so errors name the field the same way).
pub(crate) fn parse_pool(np: &crd::NodePool) -> Result<NodePool, nodewright_core::model::NodePoolError> {
    let doc = serde_json::json!({
        "apiVersion": "nodewright.io/v1alpha1",
        "kind": "NodePool",
        "metadata": { "name": np.name_any() },
        "spec": np.spec.spec,
    });
    let text = serde_yaml_ng::to_string(&doc).expect("a JSON value serialises as YAML");
    let mut parsed = nodewright_core::model::parse_node_pools(&format!("NodePool/{}", np.name_any()), &text)?;
    Ok(parsed.remove(0))
}

impl Cluster for KubeCluster {
    fn revision(&self) -> Option<u64> {
        self.cache.as_ref().and_then(cache::KubeCache::revision)
    }

    async fn node_pools(&self) -> Result<Vec<NodePool>, ClusterError> {
        let mut pools = Vec::new();
        for np in self.read::<crd::NodePool>(|c| c.node_pools.state(), "list nodepools").await? {
            match parse_pool(&np) {
                Ok(pool) => pools.push(pool),
                // One bad NodePool must not stop the others; its status
                // says why (the NodePool status controller).
                Err(e) => tracing::debug!("{e}"),
            }
        }
        let keys = pools.iter().flat_map(|p| p.policy_annotations.iter().cloned()).collect();
        *self.annotation_keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(pools)
    }

    async fn daemonsets(&self) -> Result<Vec<PodSpec>, ClusterError> {
        Ok(self
            .read::<DaemonSet>(|c| c.daemonsets.state(), "list daemonsets")
            .await?
            .iter()
            .filter_map(|d| nodewright_core::model::k8s::daemonset_spec(d, &mut Vec::new()))
            .collect())
    }

    async fn pending_pods(&self) -> Result<Vec<Pod>, ClusterError> {
        let mut specs = HashMap::new();
        let keys = self.annotation_keys();
        Ok(self
            .pods(Pods::Pending)
            .await?
            .iter()
            .filter(|p| convert::is_unschedulable(p))
            .map(|p| convert::pod(p, &mut specs, &keys))
            .collect())
    }

    async fn nodes(&self) -> Result<Vec<ExistingNode>, ClusterError> {
        let list = self.read_nodes().await?;
        let mut specs = HashMap::new();
        let keys = self.annotation_keys();
        let mut on_node: HashMap<String, Vec<Arc<PodSpec>>> = HashMap::new();
        for p in self.pods(Pods::Bound).await? {
            if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                on_node.entry(node).or_default().push(convert::pod(&p, &mut specs, &keys).spec);
            }
        }
        let claims = self.read_claims().await?;
        let claims_by_node = claims_by_node(&list, &claims);
        let mut nodes: Vec<ExistingNode> = list
            .iter()
            .map(|n| {
                let labels = n.labels().clone();
                let status = n.status.as_ref();
                ExistingNode {
                    name: claims_by_node.get(&n.name_any()).cloned().unwrap_or_else(|| n.name_any()),
                    node_pool: labels.get(nodewright_core::model::well_known::NODE_POOL).cloned(),
                    taints: n.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten().filter_map(convert::taint).collect(),
                    allocatable: convert::node_resources(status.and_then(|s| s.allocatable.as_ref())),
                    capacity: convert::node_resources(status.and_then(|s| s.capacity.as_ref())),
                    pods: Arc::new(on_node.remove(&n.name_any()).unwrap_or_default()),
                    schedulable: !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
                    labels: Arc::new(labels),
                }
            })
            .collect();
        // Launched claims whose node has not registered yet hold their pods too.
        let pools = self.node_pools().await?;
        let catalog = (self.catalog)();
        let index = self.offering_index(&catalog);
        let daemonsets = self.daemonsets().await?;
        let registered: std::collections::HashSet<String> =
            list.iter().filter_map(|n| n.spec.as_ref()?.provider_id.clone()).collect();
        for claim in &claims {
            let status = claim.status.clone().unwrap_or_default();
            if status.provider_id.as_ref().is_some_and(|p| registered.contains(p)) {
                continue;
            }
            let (Some(offering), Some(pool)) = (
                status.offering.as_ref().and_then(|o| offering_at(&index, o)),
                pools.iter().find(|p| p.name == claim.spec.node_pool),
            ) else {
                continue;
            };
            let mut node = ExistingNode::launched(&claim.name_any(), pool, &catalog.offerings[offering as usize], &daemonsets);
            // Being deleted, or its node was (it registered once): it holds
            // its pods until they are drained, but takes no new ones.
            node.schedulable = claim.metadata.deletion_timestamp.is_none() && status.node_name.is_none();
            if let Some(gone) = &status.node_name {
                Arc::make_mut(&mut node.pods).extend(on_node.remove(gone).unwrap_or_default());
            }
            nodes.push(node);
        }
        Ok(nodes)
    }

    async fn create_node_claim(&self, claim: NodeClaim) -> Result<Created, ClusterError> {
        let catalog = (self.catalog)();
        let mut object = crd::NodeClaim::new(
            &claim.name,
            crd::NodeClaimSpec {
                node_pool: claim.node_pool.clone(),
                offerings: claim.offerings.iter().map(|&o| offering_key(&catalog, o)).collect(),
                cpu_millis: claim.requests.cpu_millis,
                memory_bytes: claim.requests.memory_bytes,
                gpus: claim.requests.gpus,
                taints: claim.taints.iter().map(convert::taint_string).collect(),
                pods: claim.pods.to_vec(),
                node_pool_hash: claim.pool_hash.clone(),
            },
        );
        object.metadata.finalizers = Some(vec![TERMINATION_FINALIZER.into()]);
        object.metadata.labels = Some(BTreeMap::from([(nodewright_core::model::well_known::NODE_POOL.to_string(), claim.node_pool.clone())]));
        // Owned by its NodePool, as Karpenter's are: deleting the NodePool
        // has the garbage collector delete its NodeClaims, which the
        // termination finalizer then drains and terminates. A NodePool gone
        // already (deleted since the pass read it) gets no new claim.
        let pools = self.read::<crd::NodePool>(|c| c.node_pools.state(), "list nodepools").await?;
        let Some(pool) = pools.iter().find(|p| p.name_any() == claim.node_pool) else {
            return Ok(Created::NodePoolGone);
        };
        object.metadata.owner_references = lifecycle::owned_by(pool).map(|r| vec![r]);
        match self.claims_api().create(&PostParams::default(), &object).await {
            Ok(created) => {
                self.wrote_claim(created);
                Ok(Created::Created)
            }
            // AlreadyExists: another replica, or a process before a restart, used the name.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Created::NameTaken),
            Err(e) => Err(err("create nodeclaim")(e)),
        }
    }

    async fn claim_launched(&self, claim: &str, instance: Instance) -> Result<Recorded, ClusterError> {
        let catalog = (self.catalog)();
        let offering = catalog.offerings.get(instance.offering as usize);
        let now = chrono::Utc::now().to_rfc3339();
        let patch = serde_json::json!({ "status": {
            "providerID": offering.map(|o| format!("aws:///{}/{}", o.zone, instance.id)),
            "instanceID": instance.id,
            "offering": offering_key(&catalog, instance.offering),
            "instanceType": offering.map(|o| o.instance_type.clone()),
            "capacityType": offering.and_then(|o| nodewright_core::scheduling::offering_label(o, nodewright_core::model::well_known::CAPACITY_TYPE)),
            "zone": offering.map(|o| o.zone.clone()),
            "conditions": [
                { "type": "Launched", "status": "True", "reason": "Launched", "message": "", "lastTransitionTime": now },
                { "type": "Ready", "status": "Unknown", "reason": "AwaitingInitialization", "message": "the node has not registered and become ready yet", "lastTransitionTime": now },
            ],
        }});
        // A claim deleted while its instance launched is gone: the
        // termination path released it, finding no instance to end.
        self.patch_claim_status(claim, &patch, "patch nodeclaim status").await
    }

    async fn delete_node_claim(&self, claim: &str) -> Result<(), ClusterError> {
        // The instance is gone (or never existed): the node object goes, the
        // finalizer comes off, the claim is deleted.
        let node_name = self
            .claims_api()
            .get_opt(claim)
            .await
            .map_err(err("get nodeclaim"))?
            .and_then(|c| c.status.and_then(|s| s.node_name));
        if let Some(node) = node_name {
            let nodes: Api<core::Node> = Api::all(self.client.clone());
            match nodes.delete(&node, &DeleteParams::default()).await {
                Ok(_) => self.deleted_node(&node),
                Err(kube::Error::Api(s)) if s.code == 404 => self.deleted_node(&node),
                Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(ClusterError(format!("delete node {node}: {e}"))),
            }
        }
        let patch = serde_json::json!({ "metadata": { "finalizers": null } });
        match self.claims_api().patch(claim, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.deleted_claim(claim);
                return Ok(());
            }
            Err(e) => return Err(ClusterError(format!("remove finalizer of nodeclaim {claim}: {e}"))),
        }
        // Hidden from reads only once it is really gone: a claim whose
        // deletion failed stays visible, so the next pass tries again.
        match self.claims_api().delete(claim, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(ClusterError(format!("delete nodeclaim {claim}: {e}"))),
        }
        self.deleted_claim(claim);
        Ok(())
    }

    async fn write_claim_conditions(&self, claim: &str, conditions: &nodewright_core::model::ClaimConditions) -> Result<(), ClusterError> {
        self.patch_claim_conditions(claim, conditions).await
    }

    async fn write_claim_annotation(&self, claim: &str, key: &str, value: &str) -> Result<(), ClusterError> {
        let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
        match self.claims_api().patch(claim, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch)).await {
            Ok(patched) => {
                self.wrote_claim(patched);
                Ok(())
            }
            Err(e) => Err(ClusterError(format!("annotate nodeclaim {claim} with {key}: {e}"))),
        }
    }

    async fn request_claim_deletion(&self, claim: &str) -> Result<bool, ClusterError> {
        // The termination finalizer keeps the claim, with its
        // deletionTimestamp, until the termination path releases it.
        match self.claims_api().delete(claim, &DeleteParams::default()).await {
            Ok(answer) => {
                if let Some(marked) = answer.left() {
                    self.wrote_claim(marked);
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(ClusterError(format!("delete nodeclaim {claim}: {e}"))),
        }
    }

    async fn registrations(&self) -> Result<Vec<Registration>, ClusterError> {
        self.read_registrations().await
    }

    async fn mark_registration(&self, claim: &str, node: &str, initialized: bool) -> Result<(), ClusterError> {
        self.write_registration(claim, node, initialized).await
    }

    async fn remove_node_taints(&self, node: &str, keys: &[String]) -> Result<(), ClusterError> {
        self.untaint(node, keys).await
    }

    async fn node_pool_objects(&self) -> Result<Vec<NodePoolObject>, ClusterError> {
        self.read_node_pool_objects().await
    }

    async fn write_node_pool_status(&self, name: &str, status: &NodePoolStatus) -> Result<(), ClusterError> {
        self.patch_node_pool_status(name, status).await
    }

    async fn policy_plugins(&self) -> Result<Vec<PolicyPluginObject>, ClusterError> {
        self.list_policy_plugins().await
    }

    async fn policy_plugin_component(&self, name: &str) -> Result<Vec<u8>, String> {
        self.fetch_component(name).await
    }

    async fn write_policy_plugin_status(&self, name: &str, status: &PluginStatus) -> Result<(), ClusterError> {
        self.patch_plugin_status(name, status).await
    }

    async fn node_claims(&self) -> Result<Vec<NodeClaim>, ClusterError> {
        Ok(self.read_claims().await?.iter().map(|c| self.claim_to_model(c)).collect())
    }

    async fn node_claim(&self, name: &str) -> Result<Option<NodeClaim>, ClusterError> {
        // Only the claim asked for is converted (a drain asks for each of its nodes).
        Ok(self.read_claims().await?.iter().find(|c| c.name_any() == name).map(|c| self.claim_to_model(c)))
    }

    async fn pods_on(&self, node: &str) -> Result<Vec<Pod>, ClusterError> {
        let mut specs = HashMap::new();
        let keys = self.annotation_keys();
        let node = self.node_named(node).await?;
        Ok(self
            .pods(Pods::On(&node))
            .await?
            .iter()
            .filter(|p| !convert::is_daemon_pod(p))
            .map(|p| convert::pod(p, &mut specs, &keys))
            .collect())
    }

    async fn bound_pods(&self) -> Result<Vec<(String, Pod)>, ClusterError> {
        let by_node = self.bound_pods_by_node().await?;
        Ok(by_node.into_iter().flat_map(|(node, list)| list.pods.iter().map(|pod| (node.clone(), pod.clone())).collect::<Vec<_>>()).collect())
    }

    /// Each node's bound pods. A pod is converted again only when its
    /// object changed (another `resourceVersion`), and a node whose pods
    /// are the same objects as at the last read gets the same list back
    /// (the same allocation): what the controllers keep per list stays
    /// good from one pass to the next.
    async fn bound_pods_by_node(&self) -> Result<rustc_hash::FxHashMap<String, BoundPods>, ClusterError> {
        let keys = self.annotation_keys();
        let claims_by_node = self.claims_by_node().await?;
        let pods = self.pods(Pods::Bound).await?;
        let mut memo = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        Ok(memo.read(&pods, &claims_by_node, keys))
    }

    async fn pod_disruption_budgets(&self) -> Result<Vec<PdbStatus>, ClusterError> {
        Ok(self
            .read::<K8sPdb>(|c| c.pdbs.state(), "list poddisruptionbudgets")
            .await?
            .iter()
            .filter_map(|p| {
                // A budget Kubernetes would refuse protects nothing here either.
                let budget = nodewright_core::model::k8s::pdb(p, &mut Vec::new())
                    .map_err(|e| tracing::warn!(pdb = %convert::full_name(&p.metadata), "ignored: {e}"))
                    .ok()?;
                Some(PdbStatus { budget, disruptions_allowed: p.status.as_ref().and_then(|s| s.disruptions_allowed).unwrap_or(0).max(0) as u32 })
            })
            .collect())
    }

    async fn evict(&self, pod: &str) -> Result<Eviction, ClusterError> {
        let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod));
        let api: Api<core::Pod> = Api::namespaced(self.client.clone(), namespace);
        match api.evict(name, &EvictParams::default()).await {
            Ok(_) => Ok(Eviction::Evicted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Eviction::Evicted),
            Err(kube::Error::Api(s)) if s.code == 429 => Ok(Eviction::Blocked { pdb: s.message.clone() }),
            Err(e) => Err(ClusterError(format!("evict pod {pod}: {e}"))),
        }
    }

    async fn cordon(&self, node: &str) -> Result<(), ClusterError> {
        self.set_unschedulable(node, true).await
    }

    async fn uncordon(&self, node: &str) -> Result<(), ClusterError> {
        self.set_unschedulable(node, false).await
    }

    async fn drain(&self, node: &str) -> Result<Vec<String>, ClusterError> {
        let mut removed = Vec::new();
        let node = self.node_named(node).await?;
        for p in self.pods(Pods::On(&node)).await? {
            if convert::is_daemon_pod(&p) {
                continue;
            }
            let api: Api<core::Pod> = Api::namespaced(self.client.clone(), p.metadata.namespace.as_deref().unwrap_or("default"));
            match api.delete(&p.name_any(), &DeleteParams::default()).await {
                Ok(_) => removed.push(convert::full_name(&p.metadata)),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(ClusterError(format!("delete pod {}: {e}", convert::full_name(&p.metadata)))),
            }
        }
        Ok(removed)
    }

    async fn record_event(&self, event: ClusterEvent) -> Result<(), ClusterError> {
        let (kind, api_version, target) = match &event.object {
            EventObject::Pod(pod) => ("Pod", "v1", pod.clone()),
            EventObject::NodeClaim(claim) => ("NodeClaim", "nodewright.io/v1alpha1", format!("default/{claim}")),
        };
        if !self.event_is_new(&event) {
            return Ok(());
        }
        // Events inform: one the API server refuses (RBAC, a quota) is
        // logged, and the controller goes on.
        if let Err(e) = self.create_event(kind, api_version, &target, event.reason, &event.message, event.warning).await {
            tracing::warn!(reason = event.reason, "event not recorded: {e}");
        }
        Ok(())
    }

    /// Every pass that cannot place a pod says so: as any other Event, a
    /// repeat within ten minutes is dropped, and one the API server refuses
    /// is logged without failing the pass.
    async fn pod_unschedulable(&self, pod: &str, reason: &str) -> Result<(), ClusterError> {
        let event = ClusterEvent { object: EventObject::Pod(pod.into()), warning: true, reason: "FailedProvisioning", message: reason.into() };
        self.record_event(event).await
    }
}

/// A pod object's identity: its namespace/name and the `resourceVersion`
/// it was read at.
type PodVersion = (String, String);

/// What the last read of the bound pods made: each pod as converted, by
/// the object it came from, and each node's list with the objects it holds.
#[derive(Default)]
struct BoundMemo {
    /// The annotation keys the pods were converted with.
    keys: Arc<std::collections::BTreeSet<String>>,
    pods: HashMap<PodVersion, Pod>,
    lists: HashMap<String, (Vec<PodVersion>, BoundPods)>,
}

impl BoundMemo {
    /// `pods` (the live bound pods but daemonsets') by node: a node is
    /// named by its NodeClaim (`claims_by_node`) where it has one.
    fn read(&mut self, pods: &[Arc<core::Pod>], claims_by_node: &HashMap<String, String>, keys: Arc<std::collections::BTreeSet<String>>) -> rustc_hash::FxHashMap<String, BoundPods> {
        if self.keys != keys {
            *self = BoundMemo { keys, ..BoundMemo::default() };
        }
        let mut specs = HashMap::new();
        let mut converted: HashMap<PodVersion, Pod> = HashMap::with_capacity(pods.len());
        let mut by_node: HashMap<String, Vec<(Option<PodVersion>, Pod)>> = HashMap::new();
        for p in pods.iter().filter(|p| !convert::is_daemon_pod(p)) {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
            let node = claims_by_node.get(&node).cloned().unwrap_or(node);
            // An object without a version (never from an API server) is
            // converted every time.
            let version = p.metadata.resource_version.clone().filter(|v| !v.is_empty()).map(|v| (convert::full_name(&p.metadata), v));
            let pod = match version.as_ref().and_then(|v| self.pods.remove(v)) {
                Some(pod) => pod,
                None => convert::pod(p, &mut specs, &self.keys),
            };
            if let Some(version) = &version {
                converted.insert(version.clone(), pod.clone());
            }
            by_node.entry(node).or_default().push((version, pod));
        }
        self.pods = converted;
        let mut lists = HashMap::with_capacity(by_node.len());
        let mut out = rustc_hash::FxHashMap::default();
        for (node, mut held) in by_node {
            held.sort_by(|a, b| a.0.cmp(&b.0));
            // (Known only when every pod has a version.)
            let versions: Option<Vec<PodVersion>> = held.iter().map(|(v, _)| v.clone()).collect();
            let list = match (self.lists.remove(&node), &versions) {
                (Some((before, list)), Some(versions)) if before == *versions => list,
                _ => BoundPods::new(held.into_iter().map(|(_, pod)| pod).collect()),
            };
            out.insert(node.clone(), list.clone());
            if let Some(versions) = versions {
                lists.insert(node, (versions, list));
            }
        }
        self.lists = lists;
        out
    }
}

/// An event's identity: what it is about, its reason, its message.
type EventKey = (EventObject, &'static str, String);

/// The events sent lately: each event's last send (a repeat within
/// [`EVENT_REPEAT_AFTER`] is dropped), and the sends of the last
/// [`EVENT_WINDOW`] (at most [`EVENTS_PER_WINDOW`]).
#[derive(Default)]
struct EventLog {
    sent: HashMap<EventKey, std::time::Instant>,
    window: std::collections::VecDeque<std::time::Instant>,
}

impl EventLog {
    /// Whether the event `key` goes out at `now` (and note it if so).
    fn admit(&mut self, key: EventKey, now: std::time::Instant) -> bool {
        if self.sent.get(&key).is_some_and(|at| now.saturating_duration_since(*at) < EVENT_REPEAT_AFTER) {
            return false;
        }
        while self.window.front().is_some_and(|at| now.saturating_duration_since(*at) >= EVENT_WINDOW) {
            self.window.pop_front();
        }
        if self.window.len() >= EVENTS_PER_WINDOW {
            return false;
        }
        if self.sent.len() >= 10_000 {
            self.sent.retain(|_, at| now.saturating_duration_since(*at) < EVENT_REPEAT_AFTER);
        }
        self.sent.insert(key, now);
        self.window.push_back(now);
        true
    }
}

/// How long the same event (object, reason, message) is not sent again.
const EVENT_REPEAT_AFTER: Duration = Duration::from_secs(600);
/// At most [`EVENTS_PER_WINDOW`] events are sent in any such window.
const EVENT_WINDOW: Duration = Duration::from_secs(10);
/// See [`EVENT_WINDOW`].
const EVENTS_PER_WINDOW: usize = 200;

impl KubeCluster {
    /// Whether `event` is to be sent: not sent in the last
    /// [`EVENT_REPEAT_AFTER`], and within [`EVENTS_PER_WINDOW`] events in
    /// the last [`EVENT_WINDOW`] (a burst of launches nominates thousands of
    /// pods; the API server is not flooded). Notes it as sent.
    fn event_is_new(&self, event: &ClusterEvent) -> bool {
        let key = (event.object.clone(), event.reason, event.message.clone());
        let admitted = self.events_sent.lock().unwrap_or_else(|e| e.into_inner()).admit(key, std::time::Instant::now());
        if !admitted {
            tracing::debug!(reason = event.reason, "event not sent: a repeat, or over {EVENTS_PER_WINDOW} in {EVENT_WINDOW:?}");
        }
        admitted
    }

    /// An Event about `target` (`namespace/name`; the Event lives in that
    /// namespace) of `kind`.
    async fn create_event(&self, kind: &str, api_version: &str, target: &str, reason: &str, message: &str, warning: bool) -> Result<(), ClusterError> {
        let (namespace, name) = target.split_once('/').unwrap_or(("default", target));
        let api: Api<core::Event> = Api::namespaced(self.client.clone(), namespace);
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
        let involved_namespace = (kind == "Pod").then(|| namespace.to_string());
        let event = core::Event {
            metadata: kube::api::ObjectMeta { generate_name: Some(format!("{name}.")), namespace: Some(namespace.into()), ..Default::default() },
            involved_object: core::ObjectReference {
                kind: Some(kind.into()),
                name: Some(name.into()),
                namespace: involved_namespace,
                api_version: Some(api_version.into()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(core::EventSource { component: Some("nodewright".into()), ..Default::default() }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await.map_err(err("create event"))?;
        Ok(())
    }
}

impl KubeCluster {
    async fn set_unschedulable(&self, node: &str, value: bool) -> Result<(), ClusterError> {
        let node = &self.node_named(node).await?;
        let api: Api<core::Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({ "spec": { "unschedulable": value } });
        match api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(patched) => {
                self.wrote_node(patched);
                Ok(())
            }
            // A claim whose node has not registered: nothing to cordon.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(ClusterError(format!("patch node {node}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_not_repeated_within_ten_minutes_and_at_most_two_hundred_go_out_in_ten_seconds() {
        let start = std::time::Instant::now();
        let key = |i: usize| (EventObject::NodeClaim(format!("default-{i}")), "Launched", "launched".to_string());
        let mut log = EventLog::default();
        assert!(log.admit(key(0), start));
        assert!(!log.admit(key(0), start + Duration::from_secs(599)), "a repeat");
        assert!(log.admit(key(0), start + EVENT_REPEAT_AFTER), "sent again ten minutes on");
        // A burst: 200 in ten seconds, then none until the window moves.
        let burst = start + Duration::from_secs(700);
        let admitted = (1..=300).filter(|&i| log.admit(key(i), burst)).count();
        assert_eq!(admitted, EVENTS_PER_WINDOW);
        assert!(!log.admit(key(1000), burst + Duration::from_secs(9)));
        assert!(log.admit(key(1000), burst + EVENT_WINDOW), "the window moved on");
        // Dropped events were not noted: once the window allows, they go out.
        assert!(log.admit(key(300), burst + EVENT_WINDOW));
    }

    fn bound_pod(name: &str, node: &str, version: Option<&str>, team: &str) -> Arc<core::Pod> {
        let mut pod: core::Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "default", "labels": { "team": team } },
            "spec": { "nodeName": node, "containers": [{ "name": "c", "resources": { "requests": { "cpu": "1" } } }] },
            "status": { "phase": "Running" }
        }))
        .unwrap();
        pod.metadata.resource_version = version.map(String::from);
        Arc::new(pod)
    }

    #[test]
    fn a_node_whose_pods_did_not_change_gets_the_same_list_back_and_a_changed_pod_is_read_afresh() {
        let mut memo = BoundMemo::default();
        let keys: Arc<std::collections::BTreeSet<String>> = Arc::default();
        let claims = HashMap::from([("ip-10-0-0-1".to_string(), "default-abc".to_string())]);
        let pods = vec![
            bound_pod("a", "ip-10-0-0-1", Some("10"), "web"),
            bound_pod("b", "ip-10-0-0-1", Some("11"), "web"),
            bound_pod("c", "ip-10-0-0-2", Some("12"), "web"),
        ];
        let first = memo.read(&pods, &claims, keys.clone());
        // Named by the claim where a node has one.
        assert_eq!(first.keys().cloned().collect::<std::collections::BTreeSet<_>>(), ["default-abc", "ip-10-0-0-2"].map(String::from).into());
        let again = memo.read(&pods, &claims, keys.clone());
        for node in ["default-abc", "ip-10-0-0-2"] {
            assert!(Arc::ptr_eq(&first[node].pods, &again[node].pods), "{node}: the same list");
        }
        // Pod b relabelled (a new resourceVersion): its node's list is new and
        // says so; the other node's is kept.
        let changed = vec![pods[0].clone(), bound_pod("b", "ip-10-0-0-1", Some("13"), "batch"), pods[2].clone()];
        let third = memo.read(&changed, &claims, keys.clone());
        assert!(!Arc::ptr_eq(&again["default-abc"].pods, &third["default-abc"].pods));
        assert_eq!(third["default-abc"].pods[1].spec.labels.get("team").map(String::as_str), Some("batch"));
        assert!(Arc::ptr_eq(&again["ip-10-0-0-2"].pods, &third["ip-10-0-0-2"].pods));
        // A pod gone: its node's list is new, without it.
        let fourth = memo.read(&changed[1..], &claims, keys.clone());
        assert_eq!(fourth["default-abc"].pods.iter().map(|p| p.name.to_string()).collect::<Vec<_>>(), ["default/b"]);
        assert_ne!(fourth["default-abc"].digest, third["default-abc"].digest);
        // An object without a version is never taken for an earlier one.
        let unversioned = vec![bound_pod("d", "ip-10-0-0-3", None, "web")];
        let (x, y) = (memo.read(&unversioned, &claims, keys.clone()), memo.read(&unversioned, &claims, keys.clone()));
        assert!(!Arc::ptr_eq(&x["ip-10-0-0-3"].pods, &y["ip-10-0-0-3"].pods));
        // Other annotation keys: every pod is read afresh.
        let fifth = memo.read(&changed, &claims, keys.clone());
        let other_keys: Arc<std::collections::BTreeSet<String>> = Arc::new(["example.com/cost".to_string()].into());
        let sixth = memo.read(&changed, &claims, other_keys);
        assert!(!Arc::ptr_eq(&fifth["ip-10-0-0-2"].pods, &sixth["ip-10-0-0-2"].pods));
    }
}
