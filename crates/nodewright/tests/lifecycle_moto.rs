//! The NodeClaim lifecycle on EC2 — moto's server on a loopback port, the
//! real aws-sdk-ec2 client — and the stateful in-memory API server: the
//! scenarios the kube-rs tests run on the simulated cloud
//! (`nodewright-kube/tests/support/harness.rs`), here with CreateFleet,
//! DescribeInstances and TerminateInstances answered by moto.

#[path = "../../nodewright-core/tests/common/mod.rs"]
mod common;
#[path = "../../nodewright-aws/tests/moto/mod.rs"]
mod moto;
#[path = "../../nodewright-kube/tests/support/mod.rs"]
mod support;

use moto::Moto;
use nodewright_aws::ec2::Ec2Cloud;
use support::harness::{CrashPoint, Harness, scenarios, test_clock};

async fn harness(moto: &Moto) -> Harness<Ec2Cloud> {
    let (clock, now) = test_clock();
    Harness::on(moto.ec2_cloud(moto.ec2(), None).await, clock, now, false)
}

/// The state moto reports for every instance it launched, by NodeClaim tag.
async fn states(moto: &Moto) -> Vec<(String, String)> {
    let described = moto.ec2().describe_instances().send().await.unwrap();
    let mut states: Vec<(String, String)> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let claim = i.tags().iter().find(|t| t.key() == Some(nodewright_aws::ec2::NODE_CLAIM_TAG)).and_then(|t| t.value()).unwrap_or_default();
            (claim.to_string(), i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default())
        })
        .collect();
    states.sort();
    states
}

#[tokio::test]
async fn on_ec2_a_nodeclaim_deleted_by_hand_is_drained_through_its_pdb_and_its_instance_terminated() {
    let moto = Moto::start();
    let mut h = harness(&moto).await;
    scenarios::nodeclaim_deleted_by_hand(&mut h).await;
    // The first instance is terminated in EC2; the replacement runs.
    let states = states(&moto).await;
    assert_eq!(states.iter().filter(|(_, s)| s == "running").count(), 1, "{states:?}");
    assert_eq!(states.iter().filter(|(_, s)| s != "running").map(|(_, s)| s.as_str()).collect::<Vec<_>>(), vec!["terminated"], "{states:?}");
}

#[tokio::test]
async fn on_ec2_a_node_deleted_by_hand_takes_its_nodeclaim_and_instance_with_it() {
    let moto = Moto::start();
    scenarios::node_deleted_by_hand(&mut harness(&moto).await).await;
    assert_eq!(states(&moto).await.iter().filter(|(_, s)| s == "running").count(), 1);
}

#[tokio::test]
async fn on_ec2_a_crash_at_each_point_leaves_nothing_leaked_duplicated_or_stuck_after_a_restart() {
    for point in [CrashPoint::BeforeLaunch, CrashPoint::AfterLaunch] {
        let moto = Moto::start();
        scenarios::killed_in_launch(&mut harness(&moto).await, point).await;
        let states = states(&moto).await;
        assert_eq!(states.len(), 1, "{point:?}: one instance was ever launched: {states:?}");
    }
    for point in [CrashPoint::BeforeTerminate, CrashPoint::AfterTerminate] {
        let moto = Moto::start();
        scenarios::killed_in_termination(&mut harness(&moto).await, point).await;
        let running = states(&moto).await.into_iter().filter(|(_, s)| s == "running").count();
        assert_eq!(running, 1, "{point:?}: the replacement only");
    }
}

#[tokio::test]
async fn on_ec2_a_nodeclaim_deleted_while_its_instance_launches_has_that_instance_terminated() {
    let moto = Moto::start();
    scenarios::nodeclaim_deleted_while_launching(&mut harness(&moto).await).await;
    // Two instances were launched: the first is terminated in EC2; the one of the pods' new claim runs.
    let states = states(&moto).await;
    assert_eq!(states.iter().filter(|(_, s)| s == "running").count(), 1, "{states:?}");
    assert_eq!(states.iter().filter(|(_, s)| s != "running").map(|(_, s)| s.as_str()).collect::<Vec<_>>(), vec!["terminated"], "{states:?}");
}

#[tokio::test]
async fn on_ec2_after_failover_the_new_leader_launches_nothing_twice_and_places_every_pod() {
    let moto = Moto::start();
    scenarios::failover(&mut harness(&moto).await).await;
    let states = states(&moto).await;
    assert!(states.iter().all(|(_, s)| s == "running"), "{states:?}");
    let mut claims: Vec<&str> = states.iter().map(|(c, _)| c.as_str()).collect();
    claims.dedup();
    assert_eq!(claims.len(), states.len(), "one instance per NodeClaim: {states:?}");
}
