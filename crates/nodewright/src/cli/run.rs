//! `nodewright run`: the autoscaler in a cluster. One replica holds the
//! leader Lease and runs the controllers (NodePool status, PolicyPlugin
//! reconciler, node registration, provisioning, disruption, cluster
//! metrics, interruption queue, garbage collection), each on its own task,
//! trigger and error backoff; the others stand by. `/healthz`, `/readyz` and `/metrics`
//! are served on every replica.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

use super::metrics::Metrics;
use nodewright_core::supervise::{Ran, Steps, supervised};
use nodewright_core::cloud::CloudProvider;
use nodewright_core::cluster::Cluster;
use super::nodeclasses::{load_node_class, node_classes, resolve_classes, write_class_status};
use nodewright_kube::lease::LeaderElector;
use nodewright_core::controllers::node_pool_status::NodePoolStatusController;
use nodewright_core::controllers::policy_plugins::PolicyPluginController;
use nodewright_core::controllers::registration::RegistrationController;
use nodewright_kube::KubeCluster;

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Controller configuration (YAML), e.g. examples/deploy/config.yaml.
    #[arg(long)]
    config: PathBuf,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// This replica's name in the leader Lease [default: the host name].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Namespace of the controller: its Lease, plugin ConfigMaps.
    #[arg(long, env = "POD_NAMESPACE", default_value = "nodewright")]
    namespace: String,
}

/// The configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RunConfig {
    /// Cluster name: the ownership tag on every instance.
    cluster_name: String,
    /// The `EC2NodeClass` nodes are launched with.
    #[serde(default = "default_node_class")]
    node_class: String,
    /// URL of the interruption queue (optional).
    #[serde(default)]
    interruption_queue_url: Option<String>,
    /// Act on rebalance recommendations as on interruptions.
    #[serde(default)]
    rebalance_actionable: bool,
    /// Price overrides file (YAML).
    #[serde(default)]
    prices: Option<PathBuf>,
    /// Commitments file (YAML: Savings Plans, Reserved Instances, capacity
    /// reservations), told to contract 0.3.0 policies with how much of them
    /// the fleet uses; capacity reservations are launched into.
    #[serde(default)]
    commitments: Option<PathBuf>,
    /// The commitments file, read and checked at start, and its name.
    #[serde(skip)]
    loaded_commitments: nodewright_core::model::Commitments,
    #[serde(skip)]
    commitments_file: String,
    /// Seconds between controller passes.
    #[serde(default = "default_interval")]
    interval_seconds: u64,
    /// Name of the leader Lease.
    #[serde(default = "default_lease")]
    lease_name: String,
    /// Seconds a lease holds without renewal.
    #[serde(default = "default_lease_seconds")]
    lease_duration_seconds: u64,
    /// Seconds an instance the cluster does not know may live before it is
    /// terminated as leaked.
    #[serde(default = "default_gc_grace")]
    garbage_collection_grace_seconds: u64,
}

fn default_node_class() -> String {
    "default".into()
}
fn default_interval() -> u64 {
    10
}
fn default_lease() -> String {
    "nodewright-leader".into()
}
fn default_lease_seconds() -> u64 {
    15
}
fn default_gc_grace() -> u64 {
    600
}

/// Read and check the configuration file; errors name the file and field.
pub(crate) fn read_config(path: &Path) -> anyhow::Result<RunConfig> {
    let (_, text) = super::read_named(path)?;
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    let config: RunConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let (field, message) = nodewright_core::model::yaml_error(e);
        anyhow::anyhow!("{}: {field}: {message}", path.display())
    })?;
    anyhow::ensure!(!config.cluster_name.is_empty(), "{}: clusterName: must not be empty", path.display());
    anyhow::ensure!(config.interval_seconds > 0, "{}: intervalSeconds: must be at least 1", path.display());
    let mut config = config;
    if let Some(file) = &config.commitments {
        let (name, text) = super::read_named(file).with_context(|| format!("{}: commitments", path.display()))?;
        let commitments = nodewright_core::model::parse_commitments(&name, &text)?;
        // Launching into a capacity reservation targets it by id.
        if let Some(i) = commitments.capacity_reservations.iter().position(|r| r.id.is_none()) {
            anyhow::bail!("{name}: capacityReservations[{i}].id: is required by `nodewright run`, which launches into the reservation by its id");
        }
        config.commitments_file = name;
        config.loaded_commitments = commitments;
    }
    Ok(config)
}

pub(crate) fn run(args: RunArgs, runtime_args: &super::RuntimeArgs) -> anyhow::Result<ExitCode> {
    let config = read_config(&args.config)?;
    let runtime = runtime_args.runtime()?;
    let executor = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    executor.block_on(serve(args, config, runtime))
}

async fn serve(args: RunArgs, config: RunConfig, runtime: nodewright_core::policy::PolicyRuntime) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new());
    let observer = metrics.clone();
    nodewright_core::policy::observe_calls(move |plugin, elapsed| observer.observe_call(plugin, elapsed.as_secs_f64()));
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(http_server(args.listen, metrics.clone(), ready.clone()));

    let client = nodewright_kube::default_client().await.context("Kubernetes client (in-cluster or KUBECONFIG)")?;
    let version = client.apiserver_version().await.context("the API server's version")?;
    let version = format!("{}.{}", version.major, version.minor.trim_end_matches(|c: char| !c.is_ascii_digit()));
    let node_class = load_node_class(&client, &config.node_class, &version).await?;
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let mut cloud = nodewright_aws::ec2::Ec2Cloud::discover(
        aws_sdk_ec2::Client::new(&aws),
        &config.cluster_name,
        node_class,
        &nodewright_core::model::bundled_instance_types(),
    )
    .await
    .context("EC2 discovery")?
    .with_ssm(aws_sdk_ssm::Client::new(&aws))
    // Node classes that name a `role` get an instance profile made for it.
    .with_iam(aws_sdk_iam::Client::new(&aws), &aws.region().map(|r| r.to_string()).unwrap_or_default());
    if let Some(path) = &config.prices {
        let (name, text) = super::read_named(path)?;
        cloud = cloud.with_price_overrides(&nodewright_core::model::parse_price_overrides(&name, &text)?);
    }
    let cloud = cloud
        .with_capacity_reservations(&config.loaded_commitments.capacity_reservations)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.commitments_file))?;
    let cloud = Arc::new(cloud);
    let catalog_cloud = cloud.clone();
    let cache = nodewright_kube::cache::KubeCache::start(&client);
    let changed = cache.changed();
    let cluster = Arc::new(KubeCluster::new(client.clone(), &args.namespace, Arc::new(move || catalog_cloud.catalog())).with_cache(cache));
    let registry = Arc::new(nodewright_core::policy::PolicyRegistry::new(runtime));
    let provisioner = Arc::new(
        nodewright_core::provisioning::Provisioner::new(cloud.clone(), cluster.clone(), registry.clone())
            .with_commitments(config.loaded_commitments.clone()),
    );
    let disruption = nodewright_core::disruption::DisruptionController::new(provisioner.clone(), cluster.clone(), Default::default());
    let handler = Arc::new(nodewright_core::interruption::InterruptionHandler::new(
        cloud.clone(),
        cluster.clone(),
        provisioner.clone(),
        config.rebalance_actionable,
    ));
    let plugins = Arc::new(PolicyPluginController::new(cluster.clone(), registry.clone()));
    let identity = args.identity.clone().unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| "nodewright".into()));
    let elector = LeaderElector::new(client.clone(), &args.namespace, &config.lease_name, &identity, Duration::from_secs(config.lease_duration_seconds));

    let every = Duration::from_secs(config.interval_seconds);
    let mut controllers = controllers(&Parts {
        cluster: cluster.clone(),
        cloud: cloud.clone(),
        provisioner: provisioner.clone(),
        disruption: Arc::new(tokio::sync::Mutex::new(disruption)),
        plugins,
        metrics: metrics.clone(),
        every,
    });
    // The node classes NodePools name (`nodeClassRef`), read now and kept current.
    let (classes_client, classes_cloud, classes_version) = (client.clone(), cloud.clone(), version.clone());
    let refresh = move || {
        let (client, cloud, version) = (classes_client.clone(), classes_cloud.clone(), classes_version.clone());
        Box::pin(async move {
            let (classes, mut reports) = node_classes(&client, &version).await.map_err(|e| format!("{e:#}"))?;
            resolve_classes(&cloud, &classes, &mut reports).await;
            cloud.set_node_classes(classes);
            let mistakes = write_class_status(&client, &reports).await?;
            if mistakes.is_empty() { Ok(()) } else { Err(mistakes.join("; ")) }
        }) as StepFuture
    };
    let mut classes_controller = Controller::new("node classes", every, false, refresh);
    classes_controller.run_once(&metrics, Duration::ZERO).await;
    controllers.push(classes_controller);
    let (gc_cluster, gc_cloud, grace) = (cluster.clone(), cloud.clone(), Duration::from_secs(config.garbage_collection_grace_seconds));
    // Instances the cluster does not know, older than the grace: every 5 minutes.
    controllers.push(Controller::new("garbage collection", Duration::from_secs(300), false, move || {
        let (cluster, cloud) = (gc_cluster.clone(), gc_cloud.clone());
        Box::pin(async move {
            let claims = cluster.node_claims().await.map_err(|e| e.to_string())?.into_iter().map(|c| c.name).collect();
            cloud.collect_garbage(&claims, grace).await.map(drop).map_err(|e| e.to_string())
        })
    }));
    if let Some(url) = config.interruption_queue_url.clone() {
        let queue = Arc::new(nodewright_aws::sqs::SqsQueue::new(aws_sdk_sqs::Client::new(&aws), &url));
        let (handler, metrics) = (handler.clone(), metrics.clone());
        // A long poll of its own: the next poll starts as this one ends.
        controllers.push(Controller::new("interruption queue", Duration::ZERO, false, move || {
            let (queue, handler, metrics) = (queue.clone(), handler.clone(), metrics.clone());
            Box::pin(async move {
                queue.poll_once(&handler, nodewright_aws::sqs::LONG_POLL).await.map_err(|e| e.to_string())?;
                metrics.interruptions(&handler.counts());
                Ok(())
            })
        }));
    }

    // Decisions on a half-listed cluster would launch what exists already.
    let caches = cluster.cache().expect("started above");
    if tokio::time::timeout(Duration::from_secs(120), caches.wait_until_ready()).await.is_err() {
        anyhow::bail!("the watch caches did not complete their first list within 120 s (RBAC? API server?)");
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!(identity, "nodewright running");

    // Each controller on its own task, trigger, backoff and last-success
    // metric, running while this replica leads (and crash recovery has run).
    let (leading_tx, leading) = tokio::sync::watch::channel(false);
    let started = std::time::Instant::now();
    let mut triggers = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for controller in controllers {
        let trigger = controller.on_change.then(|| Arc::new(tokio::sync::Notify::new()));
        triggers.extend(trigger.clone());
        tasks.spawn(controller.serve(metrics.clone(), leading.clone(), trigger, started));
    }
    // A pod, node or NodePool changed: every controller that reacts to
    // changes is woken (once the burst has settled for a second).
    tasks.spawn(async move {
        loop {
            changed.notified().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            for trigger in &triggers {
                trigger.notify_one();
            }
        }
    });

    // The lease, renewed well within its duration; becoming leader first
    // runs crash recovery: a NodeClaim recorded without its instance adopts
    // the instance tagged with its name, or is deleted so its pods are
    // provisioned again. Until it has run once, nothing is launched. Then
    // NodeClaims without an owner get their NodePool as one.
    let renew = (Duration::from_secs(config.lease_duration_seconds) / 3).clamp(Duration::from_secs(1), every);
    let mut tick = tokio::time::interval(renew);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let is_leader = match elector.try_acquire_or_renew().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("leader election: {e}");
                false
            }
        };
        let was_leading = *leading_tx.borrow();
        if is_leader && !was_leading {
            match supervised("crash recovery", provisioner.reconcile()).await {
                Ok((adopted, deleted)) => tracing::info!(?adopted, ?deleted, "crash recovery"),
                Err(f) => {
                    metrics.step_failed(f.step(), f.kind());
                    continue; // tried again at the next renewal
                }
            }
            // Claims an earlier version made without an owner get their
            // NodePool as owner; one left out is tried on the next lead.
            match cluster.own_node_claims().await {
                Ok(owned) if !owned.is_empty() => tracing::info!(?owned, "NodeClaims given their NodePool as owner"),
                Ok(_) => {}
                Err(e) => tracing::warn!("NodeClaims not given their NodePool as owner: {e}"),
            }
        }
        if is_leader != was_leading {
            tracing::info!(identity, leader = is_leader, "leadership changed");
            leading_tx.send_replace(is_leader);
        }
        metrics.set_leader(is_leader);
        metrics.slots(&registry);
    }
    tracing::info!("shutting down: releasing the lease");
    leading_tx.send_replace(false);
    tasks.abort_all();
    ready.store(false, Ordering::Relaxed);
    if let Err(e) = elector.release().await {
        tracing::warn!("{e}");
    }
    server.abort();
    Ok(ExitCode::SUCCESS)
}

/// What the controllers share.
struct Parts<C> {
    cluster: Arc<KubeCluster>,
    cloud: Arc<C>,
    provisioner: Arc<nodewright_core::provisioning::Provisioner<C, KubeCluster>>,
    disruption: Arc<tokio::sync::Mutex<nodewright_core::disruption::DisruptionController<C, KubeCluster>>>,
    plugins: Arc<PolicyPluginController<KubeCluster>>,
    metrics: Arc<Metrics>,
    /// The configured interval between passes.
    every: Duration,
}

type StepFuture = futures::future::BoxFuture<'static, Result<(), String>>;

/// One controller: a step run on its own period (and, if `on_change`, when
/// the cluster changed), under its own error backoff (1 s doubling to 60 s),
/// with its failures and last success in the metrics.
struct Controller {
    name: &'static str,
    every: Duration,
    on_change: bool,
    step: Box<dyn FnMut() -> StepFuture + Send>,
    steps: Steps,
}

impl Controller {
    fn new(name: &'static str, every: Duration, on_change: bool, step: impl FnMut() -> StepFuture + Send + 'static) -> Self {
        Controller { name, every, on_change, step: Box::new(step), steps: Steps::new(Duration::from_secs(60)) }
    }

    /// Run the step once at `now` (unless it is backing off); whether it
    /// ran and succeeded.
    async fn run_once(&mut self, metrics: &Metrics, now: Duration) -> bool {
        let step = (self.step)();
        outcome(metrics, self.name, self.steps.run(self.name, now, step).await).is_some()
    }

    /// Run the step while `leading`, then after `every` or a `trigger`.
    async fn serve(mut self, metrics: Arc<Metrics>, mut leading: tokio::sync::watch::Receiver<bool>, trigger: Option<Arc<tokio::sync::Notify>>, started: std::time::Instant) {
        loop {
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            let ok = self.run_once(&metrics, started.elapsed()).await;
            // After a failure, or while backing off, at least a second.
            let wait = if ok { self.every } else { self.every.max(Duration::from_secs(1)) };
            let wake = async {
                match &trigger {
                    Some(t) => t.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake => {}
            }
        }
    }
}

/// The controllers of `run` that every cloud has (garbage collection and the
/// interruption queue are added for EC2): NodePool status, PolicyPlugins,
/// registration, provisioning and termination react to changes; disruption
/// and the cluster metrics run on their period.
fn controllers<C: CloudProvider>(parts: &Parts<C>) -> Vec<Controller> {
    let mut list = Vec::new();
    let status = Arc::new(NodePoolStatusController::new(parts.cloud.clone(), parts.cluster.clone()));
    list.push(Controller::new("NodePool status", parts.every, true, move || {
        let status = status.clone();
        Box::pin(async move { status.reconcile().await.map(drop).map_err(|e| e.to_string()) })
    }));
    let plugins = parts.plugins.clone();
    list.push(Controller::new("PolicyPlugins", parts.every, true, move || {
        let plugins = plugins.clone();
        Box::pin(async move { plugins.reconcile().await.map(drop).map_err(|e| e.to_string()) })
    }));
    let registration = Arc::new(RegistrationController::new(parts.cluster.clone()));
    list.push(Controller::new("registration", parts.every, true, move || {
        let registration = registration.clone();
        Box::pin(async move { registration.reconcile().await.map(drop).map_err(|e| e.to_string()) })
    }));
    let (provisioner, metrics) = (parts.provisioner.clone(), parts.metrics.clone());
    list.push(Controller::new("provisioning", parts.every, true, move || {
        let (provisioner, metrics) = (provisioner.clone(), metrics.clone());
        Box::pin(async move {
            let report = provisioner.provision().await.map_err(|e| e.to_string())?;
            metrics.launched(report.launched.len(), report.launch_failures.len());
            Ok(())
        })
    }));
    // Disruption decides and carries out; termination, on its own trigger,
    // only carries out (a claim deleted by hand starts its way out when the
    // watch sees it, whatever planning does). They share one controller.
    for (name, on_change, terminate_only) in [("disruption", false, false), ("termination", true, true)] {
        let (disruption, metrics) = (parts.disruption.clone(), parts.metrics.clone());
        list.push(Controller::new(name, parts.every, on_change, move || {
            let (disruption, metrics) = (disruption.clone(), metrics.clone());
            Box::pin(async move {
                let mut disruption = disruption.lock().await;
                let pass = if terminate_only { disruption.terminate_pass().await } else { disruption.reconcile().await };
                metrics.terminations(disruption.counts());
                pass.map(drop).map_err(|e| e.to_string())
            })
        }));
    }
    let (cluster, cloud, metrics) = (parts.cluster.clone(), parts.cloud.clone(), parts.metrics.clone());
    list.push(Controller::new("cluster metrics", parts.every, false, move || {
        let (cluster, cloud, metrics) = (cluster.clone(), cloud.clone(), metrics.clone());
        Box::pin(async move {
            let catalog = cloud.catalog();
            let claims = cluster.node_claims().await.map_err(|e| e.to_string())?;
            let pending = cluster.pending_pods().await.map_err(|e| e.to_string())?.len();
            let cost: f64 = claims.iter().filter_map(|c| c.instance.as_ref()).filter_map(|i| catalog.offerings.get(i.offering as usize)).map(|o| o.price_per_hour).sum();
            metrics.cluster(pending, claims.len(), cost);
            Ok(())
        })
    }));
    list
}

/// A step's value if it ran and succeeded; its failure or success counted.
fn outcome<T>(metrics: &Metrics, step: &'static str, ran: Ran<T>) -> Option<T> {
    match ran {
        Ran::Done(value) => {
            metrics.step_succeeded(step);
            Some(value)
        }
        Ran::Failed(failure) => {
            metrics.step_failed(failure.step(), failure.kind());
            None
        }
        Ran::Waiting => None,
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn http_server(listen: SocketAddr, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> anyhow::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Relaxed) {
                        (axum::http::StatusCode::OK, "ready")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cli::test_apiserver as apiserver;

    /// A stateful API server holding one NodePool and one pending pod,
    /// whose NodePool status patch fails `failures` times, and the
    /// controllers of `run` against it on a simulated cloud.
    fn world(failures: usize, every: Duration) -> (apiserver::ApiServer, Arc<nodewright_core::cloud::SimulatedCloud>, Arc<Metrics>, Vec<Controller>) {
        let (client, server) = apiserver::ApiServer::start();
        server.put(serde_json::json!({
            "apiVersion": "nodewright.io/v1alpha1", "kind": "NodePool", "metadata": { "name": "default" },
            "spec": { "template": { "spec": { "requirements": [{ "key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"] }] } },
                      "policy": { "selection": { "plugin": "karpenter-like" } } }
        }));
        server.put(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web-1", "namespace": "shop" },
            "spec": { "containers": [{ "name": "web", "resources": { "requests": { "cpu": "500m", "memory": "1Gi" } } }] },
            "status": { "phase": "Pending", "conditions": [{ "type": "PodScheduled", "status": "False", "reason": "Unschedulable" }] }
        }));
        server.fail(http::Method::PATCH, "/nodepools/default/status", 500, failures);
        let catalog = Arc::new(nodewright_core::model::Catalog::bundled_types(60));
        let cloud = Arc::new(nodewright_core::cloud::SimulatedCloud::new(
            catalog.clone(),
            Default::default(),
            Arc::new(|| Duration::ZERO),
        ));
        let cluster = Arc::new(KubeCluster::new(client.clone(), "nodewright", Arc::new(move || catalog.clone())));
        let runtime = nodewright_core::policy::PolicyRuntime::new(nodewright_core::policy::RuntimeConfig {
            cache_dir: Some(tempfile::tempdir().unwrap().keep()),
            ..Default::default()
        })
        .unwrap();
        let registry = Arc::new(nodewright_core::policy::PolicyRegistry::new(runtime));
        let provisioner = Arc::new(nodewright_core::provisioning::Provisioner::new(cloud.clone(), cluster.clone(), registry.clone()));
        let disruption = nodewright_core::disruption::DisruptionController::new(provisioner.clone(), cluster.clone(), Default::default());
        let metrics = Arc::new(Metrics::new());
        let plugins = Arc::new(PolicyPluginController::new(cluster.clone(), registry));
        let controllers = controllers(&Parts {
            cluster,
            cloud: cloud.clone(),
            provisioner,
            disruption: Arc::new(tokio::sync::Mutex::new(disruption)),
            plugins,
            metrics: metrics.clone(),
            every,
        });
        (server, cloud, metrics, controllers)
    }

    /// Each controller once, in order, against a stateful API server whose
    /// NodePool status patch fails once: the failure is counted, provisioning
    /// and the controllers after it run all the same, and the status step
    /// backs off on its own.
    #[tokio::test]
    async fn a_failing_nodepool_status_patch_does_not_stop_provisioning() {
        let (server, cloud, metrics, mut controllers) = world(1, Duration::from_secs(10));
        let names: Vec<_> = controllers.iter().map(|c| c.name).collect();
        assert_eq!(names, ["NodePool status", "PolicyPlugins", "registration", "provisioning", "disruption", "termination", "cluster metrics"]);
        let mut ran = Vec::new();
        for controller in &mut controllers {
            ran.push(controller.run_once(&metrics, Duration::ZERO).await);
        }
        assert_eq!(ran, [false, true, true, true, true, true, true]);
        let text = metrics.encode();
        assert!(text.contains("step=\"NodePool status\""), "the failure is counted: {text}");
        assert_eq!(server.list("NodeClaim").len(), 1, "provisioning ran: a NodeClaim for the pending pod");
        assert_eq!(cloud.instances().await.unwrap().len(), 1, "and its instance was launched");
        // Why it was bought as it was, read back from the NodeClaim.
        let claim = server.list("NodeClaim")[0]["metadata"]["name"].as_str().unwrap().to_string();
        let why = crate::cli::explain::from_cluster(server.client(), &claim).await.unwrap();
        assert!(why.starts_with(&format!("NodeClaim {claim} (NodePool default)\n  decided by karpenter-like (builtin), config {{}}\n  for 1 pod: shop/web-1\n")), "{why}");
        assert!(why.contains("excluded by NodePool default's requirement karpenter.sh/capacity-type In [on-demand]"), "{why}");
        assert!(text.contains("nodewright_controller_last_success_timestamp_seconds{step=\"provisioning\"}"), "{text}");
        // Backing off, the status controller waits a second; run after
        // that, it writes the status.
        assert!(!controllers[0].run_once(&metrics, Duration::from_millis(500)).await);
        assert!(server.get("NodePool", "", "default").unwrap().get("status").is_none_or(|s| s.is_null()), "still backing off");
        assert!(controllers[0].run_once(&metrics, Duration::from_secs(2)).await);
        let pool = server.get("NodePool", "", "default").unwrap();
        assert_eq!(pool["status"]["conditions"][0]["type"], "Ready", "{pool:#}");
        assert_eq!(server.unexpected(), Vec::<String>::new());
    }

    /// The controllers served on their own tasks: nothing runs before this
    /// replica leads; then provisioning launches for the pending pod while
    /// the NodePool status controller fails every time, and stopping the
    /// lead stops them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn controllers_run_on_their_own_tasks_only_while_leading() {
        let (server, cloud, metrics, controllers) = world(usize::MAX, Duration::from_millis(50));
        let (leading_tx, leading) = tokio::sync::watch::channel(false);
        let started = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for controller in controllers {
            tasks.spawn(controller.serve(metrics.clone(), leading.clone(), None, started));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(server.list("NodeClaim").len(), 0, "not leading: nothing runs");
        assert!(!metrics.encode().contains("step=\"provisioning\""));
        leading_tx.send_replace(true);
        // The launch, the provisioning step's success and the status step's
        // failure are recorded by tasks of their own: wait for all three.
        let failed = "nodewright_controller_step_failures_total{step=\"NodePool status\",kind=\"error\"}";
        let provisioned = "nodewright_controller_last_success_timestamp_seconds{step=\"provisioning\"}";
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while cloud.instances().await.unwrap().is_empty() || !metrics.encode().contains(failed) || !metrics.encode().contains(provisioned) {
            assert!(std::time::Instant::now() < deadline, "provisioning never ran: {}", metrics.encode());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(server.list("NodeClaim").len(), 1);
        let text = metrics.encode();
        assert!(text.contains("nodewright_controller_step_failures_total{step=\"NodePool status\",kind=\"error\"}"), "{text}");
        assert!(text.contains("nodewright_controller_last_success_timestamp_seconds{step=\"provisioning\"}"), "{text}");
        assert!(!text.contains("nodewright_controller_last_success_timestamp_seconds{step=\"NodePool status\"}"), "{text}");
        leading_tx.send_replace(false);
        tasks.abort_all();
    }

    #[test]
    fn the_example_config_loads_and_a_bad_field_is_named() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let config = read_config(&root.join("examples/deploy/config.yaml")).unwrap();
        assert_eq!(config.cluster_name, "my-cluster");
        assert_eq!(config.interval_seconds, 10);
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("config.yaml");
        std::fs::write(&bad, "clusterName: c\nintervalSecs: 5\n").unwrap();
        let err = read_config(&bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: intervalSecs: unknown field `intervalSecs`", bad.display())), "{err}");
        std::fs::write(&bad, "clusterName: c\nintervalSeconds: 0\n").unwrap();
        assert_eq!(read_config(&bad).unwrap_err().to_string(), format!("{}: intervalSeconds: must be at least 1", bad.display()));
    }

    #[test]
    fn the_commitments_file_is_read_at_start_and_its_mistakes_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let commitments = dir.path().join("commitments.yaml");
        std::fs::write(&config, format!("clusterName: c\ncommitments: {}\n", commitments.display())).unwrap();
        std::fs::write(&commitments, "savingsPlans:\n  - hourlyCommitment: 1.5\n    discount: 0.28\n").unwrap();
        let read = read_config(&config).unwrap();
        assert_eq!(read.loaded_commitments.savings_plans.len(), 1);
        std::fs::write(&commitments, "savingsPlans:\n  - hourlyCommitment: 1.5\n    discount: 1.28\n").unwrap();
        assert_eq!(
            read_config(&config).unwrap_err().to_string(),
            format!("{}: savingsPlans[0].discount: 1.28 is not a discount from 0 (none) to below 1 (everything)", commitments.display())
        );
        std::fs::write(&commitments, "capacityReservations:\n  - instanceType: m5.xlarge\n    zone: us-east-1a\n    count: 1\n    hourlyRate: 0.19\n").unwrap();
        let err = read_config(&config).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}: capacityReservations[0].id: is required by `nodewright run`, which launches into the reservation by its id", commitments.display())
        );
        std::fs::write(&commitments, "capacityReservations:\n  - instanceType: m5.xlarge\n    zone: us-east-1a\n    count: 1\n    hourlyRate: 0.19\n    id: cr-0a1b2c3d4e5f60718\n").unwrap();
        let read = read_config(&config).unwrap();
        assert_eq!(read.loaded_commitments.capacity_reservations[0].id.as_deref(), Some("cr-0a1b2c3d4e5f60718"));
        assert_eq!(read.commitments_file, commitments.display().to_string());
        std::fs::remove_file(&commitments).unwrap();
        let err = format!("{:#}", read_config(&config).unwrap_err());
        assert!(err.starts_with(&format!("{}: commitments: ", config.display())), "{err}");
    }
}
