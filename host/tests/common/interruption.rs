//! A simulated cloud and cluster with an interruption handler, and
//! EventBridge events to feed it.

use std::sync::Arc;
use std::time::Duration;

use nodewright::cloud::{SimulatedCloud, SimulatedCloudConfig};
use nodewright::cluster::SimulatedCluster;
use nodewright::interruption::InterruptionHandler;
use nodewright::model::{Catalog, NodePool};
use nodewright::policy::PolicyRegistry;
use nodewright::provisioning::Provisioner;

/// The simulated world an interruption handler acts on.
pub struct World {
    pub cloud: Arc<SimulatedCloud>,
    pub cluster: Arc<SimulatedCluster>,
    pub provisioner: Arc<Provisioner<SimulatedCloud, SimulatedCluster>>,
    pub handler: InterruptionHandler<SimulatedCloud, SimulatedCluster>,
    _cache: tempfile::TempDir,
}

/// A world with one NodePool `default` over 200 instance types.
pub fn world(rebalance_actionable: bool) -> World {
    let (runtime, cache) = super::runtime();
    let catalog = Arc::new(Catalog::bundled_types(200));
    let cloud = Arc::new(SimulatedCloud::new(catalog.clone(), SimulatedCloudConfig::default(), Arc::new(|| Duration::from_secs(1000))));
    let cluster = Arc::new(SimulatedCluster::new(catalog, vec![NodePool::new("default")]));
    let provisioner = Arc::new(Provisioner::new(cloud.clone(), cluster.clone(), Arc::new(PolicyRegistry::new(runtime))));
    let handler = InterruptionHandler::new(cloud.clone(), cluster.clone(), provisioner.clone(), rebalance_actionable);
    World { cloud, cluster, provisioner, handler, _cache: cache }
}

/// An EventBridge event.
pub fn event(source: &str, detail_type: &str, detail: &str) -> String {
    format!(
        r#"{{"version":"0","id":"e","detail-type":"{detail_type}","source":"{source}","account":"1","time":"2026-11-25T12:00:00Z","region":"us-east-1","resources":[],"detail":{detail}}}"#
    )
}

/// A spot interruption warning for `instance`.
pub fn spot_warning(instance: &str) -> String {
    event("aws.ec2", "EC2 Spot Instance Interruption Warning", &format!(r#"{{"instance-id":"{instance}","instance-action":"terminate"}}"#))
}
