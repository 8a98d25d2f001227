//! The lifecycle controllers (registration, NodePool status, the
//! PolicyPlugin reconciler) on the simulated cluster: the code
//! `nodewright run` runs against the API server.

mod common;

use std::sync::Arc;

use nodewright_core::cluster::{Cluster, NodePoolStatus, PluginStatus, PolicyPluginObject};
use nodewright_core::controllers::policy_plugins::PluginOutcome;
use nodewright_core::model::{Catalog, NodePool, PodSpec, Resources, Taint, TaintEffect};
use nodewright_core::policy::{Role, SlotMode};
use nodewright_core::provisioning::{ClaimSpec, selection_slot};
use nodewright_core::sim::{SimClock, WorldSettings, drive};

fn starting() -> Taint {
    Taint { key: "example.com/agent-not-ready".into(), value: String::new(), effect: TaintEffect::NoSchedule }
}

fn world(pool: NodePool) -> common::TestWorld {
    common::test_world(SimClock::default(), Arc::new(Catalog::bundled_types(60)), vec![pool], WorldSettings::default())
}

/// A launched claim of the world's first NodePool as catalog offering `offering`.
fn launched(w: &common::TestWorld, offering: u32) -> String {
    let pools = drive(w.cluster.node_pools()).unwrap();
    let spec = ClaimSpec { pool: &pools[0], offerings: vec![offering], pods: vec![], requests: Default::default(), catalog_version: nodewright_core::cloud::CloudProvider::catalog(&*w.cloud).version };
    drive(w.provisioner.launch_claim(spec)).unwrap().unwrap().claim
}

#[test]
fn a_registered_node_keeps_its_startup_taint_until_registration_removes_it_and_initialises_its_claim() {
    let mut pool = NodePool::new("default");
    pool.startup_taints = vec![starting()];
    let w = world(pool);
    let claim = launched(&w, 0);
    // The kubelet registers the node with the startup taint; nothing is
    // initialised yet, and a pod that does not tolerate it stays pending.
    w.cluster.register(&claim).unwrap();
    let taints = |w: &common::TestWorld| w.cluster.node(&claim).unwrap().taints.iter().map(|t| t.key.clone()).collect::<Vec<_>>();
    assert_eq!(taints(&w), vec!["example.com/agent-not-ready".to_string()]);
    assert!(!drive(w.cluster.node_claim(&claim)).unwrap().unwrap().initialized);
    w.cluster.add_pods(PodSpec::requesting(100, 1 << 20).pods("web", 1));
    assert!(w.cluster.schedule_pending(true).bound.is_empty(), "the startup taint keeps pods off");
    // Registration: the taint comes off, the claim is initialised, once.
    let report = drive(w.registration.reconcile()).unwrap();
    assert_eq!(report.initialized, vec![claim.clone()]);
    assert!(taints(&w).is_empty());
    assert!(drive(w.cluster.node_claim(&claim)).unwrap().unwrap().initialized);
    assert_eq!(w.cluster.schedule_pending(true).bound, vec![("web-0".to_string(), claim.clone())]);
    assert_eq!(drive(w.registration.reconcile()).unwrap(), Default::default(), "nothing is written again");
}

#[test]
fn a_node_pool_status_counts_its_claims_and_the_capacity_of_its_launched_nodes_and_is_written_only_on_change() {
    let w = world(NodePool::new("default"));
    let catalog = nodewright_core::cloud::CloudProvider::catalog(&*w.cloud);
    let a = launched(&w, 0);
    launched(&w, 7);
    assert_eq!(drive(w.node_pool_status.reconcile()).unwrap(), vec!["default".to_string()]);
    let objects = drive(w.cluster.node_pool_objects()).unwrap();
    let capacity = |o: usize| catalog.offerings[o].capacity;
    let expected = NodePoolStatus { invalid: None, nodes: 2, resources: capacity(0).saturating_add(capacity(7)) };
    assert_eq!(objects[0].status.as_ref(), Some(&expected));
    assert!(expected.resources.cpu_millis > 0 && expected.resources != Resources::default());
    // Nothing changed: nothing written. A claim goes: written again.
    assert!(drive(w.node_pool_status.reconcile()).unwrap().is_empty());
    drive(w.cluster.delete_node_claim(&a)).unwrap();
    assert_eq!(drive(w.node_pool_status.reconcile()).unwrap(), vec!["default".to_string()]);
    let status = drive(w.cluster.node_pool_objects()).unwrap()[0].status.clone().unwrap();
    assert_eq!((status.nodes, status.resources), (1, capacity(7)));
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn plugin(name: &str, sha256: &str) -> PolicyPluginObject {
    PolicyPluginObject { name: name.into(), role: Role::Selection, mode: SlotMode::Active, sha256: sha256.into(), config: "{}".into(), loaded_digest: None }
}

#[test]
fn a_policy_plugin_is_verified_and_swapped_into_the_slots_naming_it_and_a_bad_digest_is_rejected_while_the_old_version_serves() {
    let w = world(NodePool::new("default").selection("team-cheapest", "{}"));
    let bytes = std::fs::read(common::component("cheapest")).unwrap();
    let digest = sha256(&bytes);
    w.cluster.add_policy_plugin(plugin("team-cheapest", &digest), bytes.clone());
    let outcomes = drive(w.policy_plugins.reconcile()).unwrap();
    assert_eq!(outcomes, vec![PluginOutcome::Loaded { plugin: "team-cheapest".into(), digest: digest.clone(), slots: vec![selection_slot("default")] }]);
    assert_eq!(w.cluster.policy_plugin_status("team-cheapest"), Some(PluginStatus::Loaded { digest: digest.clone(), slots: 1 }));
    let serving = || w.registry.slot(&selection_slot("default")).and_then(|s| s.active_plugin()).map(|p| p.info().digest.clone());
    assert_eq!(serving(), Some(format!("sha256:{digest}")));
    assert_eq!(drive(w.policy_plugins.reconcile()).unwrap(), vec![PluginOutcome::Unchanged { plugin: "team-cheapest".into() }]);
    // A new version whose digest is not the one written: refused, the old one serves.
    let other = std::fs::read(common::component("spot-savvy")).unwrap();
    let wrong = "0".repeat(64);
    w.cluster.add_policy_plugin(plugin("team-cheapest", &wrong), other.clone());
    let message = format!("spec.source.sha256 is {wrong} but the component's sha256 is {}; the previous version keeps serving", sha256(&other));
    assert_eq!(
        drive(w.policy_plugins.reconcile()).unwrap(),
        vec![PluginOutcome::Rejected { plugin: "team-cheapest".into(), reason: "DigestMismatch".into(), message: message.clone() }]
    );
    assert_eq!(w.cluster.policy_plugin_status("team-cheapest"), Some(PluginStatus::Rejected { reason: "DigestMismatch".into(), message }));
    assert_eq!(serving(), Some(format!("sha256:{digest}")));
    // Bytes that are not a component, with their true digest: refused at load.
    let junk = b"not wasm".to_vec();
    w.cluster.add_policy_plugin(plugin("team-cheapest", &sha256(&junk)), junk);
    match drive(w.policy_plugins.reconcile()).unwrap().as_slice() {
        [PluginOutcome::Rejected { reason, message, .. }] => {
            assert_eq!(reason, "LoadFailed");
            assert!(message.ends_with("; the previous version keeps serving"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(serving(), Some(format!("sha256:{digest}")));
}
