//! A simulated cloud and cluster with an interruption handler, and
//! EventBridge events to feed it.

use std::sync::Arc;
use std::time::Duration;

use nodewright_core::model::{Catalog, NodePool};
use nodewright_core::sim::{SimClock, WorldSettings};

/// The simulated world an interruption handler acts on.
pub type World = super::TestWorld;

/// A world with one NodePool `default` over 200 instance types, at 1000 s.
pub fn world(rebalance_actionable: bool) -> World {
    let catalog = Arc::new(Catalog::bundled_types(200));
    let clock = SimClock::default();
    clock.set(Duration::from_secs(1000));
    let settings = WorldSettings { rebalance_actionable, ..WorldSettings::default() };
    super::test_world(clock, catalog, vec![NodePool::new("default")], settings)
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
