//! `nodewright run`: the autoscaler in a cluster. One replica holds the
//! leader Lease and runs the controllers (PolicyPlugin reconciler, node
//! registration, provisioning, disruption, interruption queue, garbage
//! collection); the others stand by. `/healthz`, `/readyz` and `/metrics`
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
use nodewright_kube::crd::EC2NodeClass;
use nodewright_kube::lease::LeaderElector;
use nodewright_kube::plugins::PluginReconciler;
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

fn node_class(spec: &nodewright_kube::crd::EC2NodeClassSpec, name: &str) -> anyhow::Result<nodewright_aws::ec2::Ec2NodeClass> {
    let ami = match (&spec.ami.id, &spec.ami.ssm_parameter) {
        (Some(id), _) => nodewright_aws::ec2::AmiSource::Id(id.clone()),
        (None, Some(p)) => nodewright_aws::ec2::AmiSource::SsmParameter(p.clone()),
        (None, None) => anyhow::bail!("EC2NodeClass {name}: spec.ami: set id or ssmParameter"),
    };
    Ok(nodewright_aws::ec2::Ec2NodeClass {
        subnet_tags: spec.subnet_selector_tags.clone(),
        security_group_tags: spec.security_group_selector_tags.clone(),
        ami,
        root_volume_gib: spec.root_volume_gib,
        instance_profile: spec.instance_profile.clone(),
        user_data: spec.user_data.clone(),
        tags: spec.tags.clone(),
    })
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
    let leader = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(http_server(args.listen, metrics.clone(), ready.clone()));

    let client = kube::Client::try_default().await.context("Kubernetes client (in-cluster or KUBECONFIG)")?;
    let classes: kube::Api<EC2NodeClass> = kube::Api::all(client.clone());
    let class = classes.get(&config.node_class).await.with_context(|| format!("EC2NodeClass {}", config.node_class))?;
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let mut cloud = nodewright_aws::ec2::Ec2Cloud::discover(
        aws_sdk_ec2::Client::new(&aws),
        &config.cluster_name,
        node_class(&class.spec, &config.node_class)?,
        &nodewright_core::model::bundled_instance_types(),
    )
    .await
    .context("EC2 discovery")?
    .with_ssm(aws_sdk_ssm::Client::new(&aws));
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
    let mut disruption = nodewright_core::disruption::DisruptionController::new(provisioner.clone(), cluster.clone(), Default::default());
    let handler = Arc::new(nodewright_core::interruption::InterruptionHandler::new(
        cloud.clone(),
        cluster.clone(),
        provisioner.clone(),
        config.rebalance_actionable,
    ));
    let plugins = PluginReconciler::new(client.clone(), &args.namespace, registry.clone());
    let identity = args.identity.clone().unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| "nodewright".into()));
    let elector = LeaderElector::new(client.clone(), &args.namespace, &config.lease_name, &identity, Duration::from_secs(config.lease_duration_seconds));

    if let Some(url) = config.interruption_queue_url.clone() {
        let queue = nodewright_aws::sqs::SqsQueue::new(aws_sdk_sqs::Client::new(&aws), &url);
        let (handler, leader, metrics) = (handler.clone(), leader.clone(), metrics.clone());
        tokio::spawn(async move {
            loop {
                if !leader.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                if let Err(f) = supervised("interruption queue", queue.poll_once(&handler, nodewright_aws::sqs::LONG_POLL)).await {
                    metrics.step_failed(f.step(), f.kind());
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        });
    }

    // Decisions on a half-listed cluster would launch what exists already.
    let caches = cluster.cache().expect("started above");
    if tokio::time::timeout(Duration::from_secs(120), caches.wait_until_ready()).await.is_err() {
        anyhow::bail!("the watch caches did not complete their first list within 120 s (RBAC? API server?)");
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!(identity, "nodewright running");
    let mut tick = tokio::time::interval(Duration::from_secs(config.interval_seconds));
    let mut passes: u64 = 0;
    // Each controller step's backoff and last success.
    let mut steps = Steps::new(Duration::from_secs(60));
    let started = std::time::Instant::now();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
            // A pod, node or NodePool changed: a pass soon, once the burst
            // has settled for a second (at most one pass a second).
            _ = changed.notified() => tokio::time::sleep(Duration::from_secs(1)).await,
        }
        let is_leader = match elector.try_acquire_or_renew().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("leader election: {e}");
                false
            }
        };
        let was_leader = leader.swap(is_leader, Ordering::Relaxed);
        if is_leader != was_leader {
            tracing::info!(identity, leader = is_leader, "leadership changed");
        }
        metrics.set_leader(is_leader);
        if !is_leader {
            continue;
        }
        if !was_leader {
            // What a leader that stopped mid-launch left: a NodeClaim
            // recorded without its instance adopts the instance tagged with
            // its name, or is deleted so its pods are provisioned again.
            // Until this has run once, nothing is launched.
            match supervised("crash recovery", provisioner.reconcile()).await {
                Ok((adopted, deleted)) => tracing::info!(?adopted, ?deleted, "crash recovery"),
                Err(f) => {
                    metrics.step_failed(f.step(), f.kind());
                    leader.store(false, Ordering::Relaxed); // tried again next pass
                    continue;
                }
            }
        }
        passes += 1;
        pass(&cluster, &provisioner, &mut disruption, &plugins, &metrics, &cloud, &mut steps, started.elapsed()).await;
        metrics.slots(&registry);
        metrics.interruptions(&handler.counts());
        if passes.is_multiple_of(30) {
            let claims = cluster.node_claims().await.map(|c| c.into_iter().map(|c| c.name).collect()).unwrap_or_default();
            if let Err(e) = cloud.collect_garbage(&claims, Duration::from_secs(config.garbage_collection_grace_seconds)).await {
                tracing::warn!("garbage collection: {e}");
            }
        }
    }
    tracing::info!("shutting down: releasing the lease");
    ready.store(false, Ordering::Relaxed);
    if let Err(e) = elector.release().await {
        tracing::warn!("{e}");
    }
    server.abort();
    Ok(ExitCode::SUCCESS)
}

/// One pass of every controller, as the leader. Each step runs under
/// `steps`, its own supervision: an error or a panic is logged and counted,
/// the step backs off (1 s doubling to 60 s, by `now`) while the steps after
/// it run every pass (a failed NodePool status patch must not stop
/// provisioning), and each success is recorded as the step's last success.
#[allow(clippy::too_many_arguments)]
async fn pass<C: CloudProvider>(
    cluster: &Arc<KubeCluster>,
    provisioner: &Arc<nodewright_core::provisioning::Provisioner<C, KubeCluster>>,
    disruption: &mut nodewright_core::disruption::DisruptionController<C, KubeCluster>,
    plugins: &PluginReconciler,
    metrics: &Metrics,
    cloud: &Arc<C>,
    steps: &mut Steps,
    now: Duration,
) {
    let Some(pools) = outcome(metrics, "read NodePools", steps.run("read NodePools", now, cluster.node_pools()).await) else { return };
    outcome(metrics, "NodePool status", steps.run("NodePool status", now, cluster.sync_node_pool_status()).await);
    outcome(metrics, "PolicyPlugins", steps.run("PolicyPlugins", now, plugins.reconcile(&pools)).await);
    outcome(metrics, "registration", steps.run("registration", now, cluster.sync_registrations(&pools)).await);
    if let Some(report) = outcome(metrics, "provisioning", steps.run("provisioning", now, provisioner.provision()).await) {
        metrics.launched(report.launched.len(), report.launch_failures.len());
    }
    outcome(metrics, "disruption", steps.run("disruption", now, disruption.reconcile()).await);
    metrics.terminations(disruption.counts());
    let catalog = cloud.catalog();
    let observed = steps
        .run("cluster metrics", now, async {
            let claims = cluster.node_claims().await?;
            let pending = cluster.pending_pods().await?.len();
            Ok::<_, nodewright_core::cluster::ClusterError>((claims, pending))
        })
        .await;
    if let Some((claims, pending)) = outcome(metrics, "cluster metrics", observed) {
        let cost: f64 = claims.iter().filter_map(|c| c.instance.as_ref()).filter_map(|i| catalog.offerings.get(i.offering as usize)).map(|o| o.price_per_hour).sum();
        metrics.cluster(pending, claims.len(), cost);
    }
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

/// The stateful API server the kube-rs tests use.
#[cfg(test)]
#[path = "../../../nodewright-kube/tests/support/apiserver.rs"]
mod test_apiserver;

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_apiserver as apiserver;

    /// One pass against a stateful API server whose NodePool status patch
    /// fails: the failure is counted, and provisioning and the steps after
    /// it run all the same.
    #[tokio::test]
    async fn a_failing_nodepool_status_patch_does_not_stop_provisioning_that_pass() {
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
        server.fail(http::Method::PATCH, "/nodepools/default/status", 500, 1);
        let catalog = Arc::new(nodewright_core::model::Catalog::bundled_types(60));
        let cloud = Arc::new(nodewright_core::cloud::SimulatedCloud::new(
            catalog.clone(),
            Default::default(),
            Arc::new(|| Duration::ZERO),
        ));
        let cluster = Arc::new(KubeCluster::new(client.clone(), "nodewright", Arc::new(move || catalog.clone())));
        let dir = tempfile::tempdir().unwrap();
        let runtime = nodewright_core::policy::PolicyRuntime::new(nodewright_core::policy::RuntimeConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
        let registry = Arc::new(nodewright_core::policy::PolicyRegistry::new(runtime));
        let provisioner = Arc::new(nodewright_core::provisioning::Provisioner::new(cloud.clone(), cluster.clone(), registry.clone()));
        let mut disruption = nodewright_core::disruption::DisruptionController::new(provisioner.clone(), cluster.clone(), Default::default());
        let plugins = PluginReconciler::new(client, "nodewright", registry);
        let metrics = Metrics::new();
        let mut steps = Steps::new(Duration::from_secs(60));
        pass(&cluster, &provisioner, &mut disruption, &plugins, &metrics, &cloud, &mut steps, Duration::ZERO).await;
        let text = metrics.encode();
        assert!(text.contains("step=\"NodePool status\""), "the failure is counted: {text}");
        assert_eq!(server.list("NodeClaim").len(), 1, "provisioning ran: a NodeClaim for the pending pod");
        assert_eq!(cloud.instances().await.unwrap().len(), 1, "and its instance was launched");
        assert!(text.contains("nodewright_controller_last_success_timestamp_seconds{step=\"provisioning\"}"), "{text}");
        // Backing off, the status step waits a second; the next pass after
        // that writes the status.
        pass(&cluster, &provisioner, &mut disruption, &plugins, &metrics, &cloud, &mut steps, Duration::from_millis(500)).await;
        assert!(server.get("NodePool", "", "default").unwrap().get("status").is_none_or(|s| s.is_null()), "still backing off");
        pass(&cluster, &provisioner, &mut disruption, &plugins, &metrics, &cloud, &mut steps, Duration::from_secs(2)).await;
        let pool = server.get("NodePool", "", "default").unwrap();
        assert_eq!(pool["status"]["conditions"][0]["type"], "Ready", "{pool:#}");
        assert_eq!(server.unexpected(), Vec::<String>::new());
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
