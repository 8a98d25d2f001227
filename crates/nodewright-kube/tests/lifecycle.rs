//! The controllers against a stateful in-memory API server
//! (`support::apiserver`): the NodeClaim lifecycle as a cluster lives it,
//! with this test standing in for the kubelet (Nodes register and become
//! Ready), the kube-scheduler (pending pods are bound) and the workload
//! controllers (an evicted pod comes back pending; a PodDisruptionBudget's
//! status follows its running pods).

#[path = "../../nodewright-core/tests/common/mod.rs"]
mod common;
mod support;


use nodewright_core::cloud::CloudProvider;
use support::harness::{CrashPoint, Harness, drained_onto_a_replacement, scenarios, two_pods_running};

#[tokio::test]
async fn a_nodeclaim_deleted_by_hand_is_drained_through_its_pdb_terminated_and_its_finalizer_removed() {
    scenarios::nodeclaim_deleted_by_hand(&mut Harness::new()).await;
}

#[tokio::test]
async fn a_node_deleted_by_hand_deletes_its_nodeclaim_which_is_drained_and_terminated_the_same_way() {
    scenarios::node_deleted_by_hand(&mut Harness::new()).await;
}

#[tokio::test]
async fn a_crash_in_launch_or_termination_leaves_nothing_leaked_duplicated_or_stuck_after_a_restart() {
    for point in [CrashPoint::BeforeLaunch, CrashPoint::AfterLaunch] {
        scenarios::killed_in_launch(&mut Harness::new(), point).await;
    }
    for point in [CrashPoint::BeforeTerminate, CrashPoint::AfterTerminate] {
        scenarios::killed_in_termination(&mut Harness::new(), point).await;
    }
}

#[tokio::test]
async fn a_nodeclaim_deleted_while_its_instance_launches_has_that_instance_terminated_and_its_pods_get_another() {
    scenarios::nodeclaim_deleted_while_launching(&mut Harness::new()).await;
}

#[tokio::test]
async fn after_failover_the_new_leader_draws_fresh_names_launches_nothing_twice_and_places_every_pod() {
    scenarios::failover(&mut Harness::new()).await;
}

#[tokio::test]
async fn with_watch_caches_a_nodeclaim_deleted_by_hand_is_drained_and_released_from_what_the_watches_deliver() {
    let mut h = Harness::with_watch_caches().await;
    let (first, node) = two_pods_running(&mut h).await;
    assert_eq!(h.server.delete("NodeClaim", "", &first), 200);
    drained_onto_a_replacement(&mut h, &first, &node).await;
    let cache = h.cluster.cache().unwrap();
    assert_eq!(cache.node_claims.state().len(), 1, "the watch delivered the release");
    assert_eq!(cache.pods.state().len(), 2);
}

#[tokio::test]
async fn a_spot_interruption_drains_through_the_pdb_and_the_termination_path_finishes_what_the_budget_held() {
    let mut h = Harness::new();
    let (first, node) = two_pods_running(&mut h).await;
    let instance = h.cloud.instances().await.unwrap().into_iter().find(|i| i.claim == first).expect("its instance").id;
    let handler = nodewright_core::interruption::InterruptionHandler::new(h.cloud.clone(), h.cluster.clone(), h.provisioner.clone(), false);
    let outcome = handler.handle_event("m1", nodewright_core::interruption::InterruptionKind::SpotInterruption { instance }).await.unwrap();
    // The replacement first; then the budget lets one pod go, and holds the other.
    assert_eq!(
        outcome,
        nodewright_core::interruption::Outcome::Replaced { kind: "spot-interruption", claims: vec![first.clone()], replacements: 1, evicted: 1 }
    );
    let evictions = h.server.evictions();
    assert_eq!(evictions.iter().filter(|e| e.1).count(), 1, "{evictions:?}");
    assert!(evictions.iter().any(|e| !e.1), "the budget refused the second: {evictions:?}");
    // Marked for deletion, so the handed-over node survives the message
    // being deleted (and a restart).
    let claim = h.server.get("NodeClaim", "", &first).unwrap();
    assert!(claim["metadata"]["deletionTimestamp"].is_string());
    let why = claim["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "DisruptionReason").cloned().unwrap();
    assert_eq!((why["status"].as_str(), why["reason"].as_str()), (Some("True"), Some("Interrupted")));
    drained_onto_a_replacement(&mut h, &first, &node).await;
}

#[tokio::test]
async fn a_drifted_nodeclaim_says_so_and_why_in_its_conditions_and_the_reason_it_is_disrupted_for() {
    let mut h = Harness::new();
    let (first, _) = two_pods_running(&mut h).await;
    let conditions = |h: &Harness| -> Vec<(String, String, String)> {
        let claim = h.server.get("NodeClaim", "", &first).expect("the claim");
        let wanted = ["Drifted", "Consolidatable", "Empty", "DisruptionReason"];
        claim["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| wanted.contains(&c["type"].as_str().unwrap()))
            .map(|c| (c["type"].as_str().unwrap().into(), c["status"].as_str().unwrap().into(), c["reason"].as_str().unwrap().into()))
            .collect()
    };
    // Its launch and the pods nominated to it are Events.
    let events = h.server.list("Event");
    let about = |kind: &str, reason: &str| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e["involvedObject"]["kind"] == kind && e["reason"] == reason)
            .map(|e| (e["metadata"]["namespace"].as_str().unwrap_or_default().to_string(), e["involvedObject"]["name"].as_str().unwrap_or_default().to_string()))
            .collect()
    };
    assert_eq!(about("NodeClaim", "Launched"), vec![("default".to_string(), first.clone())]);
    let mut nominated = about("Pod", "Nominated");
    nominated.sort();
    assert_eq!(nominated, vec![("shop".to_string(), "web-1".to_string()), ("shop".to_string(), "web-2".to_string())]);
    // Running two pods, matching its NodePool: none holds.
    let none = ["Drifted", "Consolidatable", "Empty", "DisruptionReason"].map(|t| (t.to_string(), "False".to_string(), format!("Not{t}")));
    assert_eq!(conditions(&h), none.to_vec());
    // The NodePool changes: the claim drifted, and says so.
    let labels = serde_json::json!({ "spec": { "template": { "metadata": { "labels": { "team": "payments" } } } } });
    assert_eq!(h.server.patch("NodePool", "", "default", &labels), 200);
    h.pass().await;
    let said = conditions(&h);
    assert!(said.contains(&("Drifted".into(), "True".into(), "NodePoolDrifted".into())), "{said:?}");
    assert!(said.contains(&("Consolidatable".into(), "False".into(), "NotConsolidatable".into())), "consolidateAfter: Never: {said:?}");
    assert!(said.contains(&("Empty".into(), "False".into(), "NotEmpty".into())), "{said:?}");
    // Its PDB (minAvailable 1 of two pods on it) holds the drift back;
    // deleted by hand, it is disrupted, and says why.
    assert_eq!(h.server.delete("NodeClaim", "", &first), 200);
    h.pass().await;
    let said = conditions(&h);
    assert!(said.contains(&("DisruptionReason".into(), "True".into(), "Deleted".into())), "{said:?}");
}

#[tokio::test]
async fn the_termination_pass_alone_drains_and_releases_a_nodeclaim_deleted_by_hand() {
    let mut h = Harness::new();
    let (first, _) = two_pods_running(&mut h).await;
    let planned = h.disruption.counts().passes;
    assert_eq!(h.server.delete("NodeClaim", "", &first), 200);
    // Registration, provisioning and termination only: no disruption pass.
    let mut passes = 0;
    while h.server.get("NodeClaim", "", &first).is_some() {
        nodewright_core::controllers::registration::RegistrationController::new(h.cluster.clone()).reconcile().await.unwrap();
        h.provisioner.provision().await.unwrap();
        h.disruption.terminate_pass().await.unwrap();
        h.stand_in().await;
        h.clock.fetch_add(20, std::sync::atomic::Ordering::Relaxed);
        passes += 1;
        assert!(passes < 40, "the claim is still there after {passes} passes");
    }
    assert_eq!(h.disruption.counts().passes, planned, "nothing was planned");
    assert!(h.cloud_instance(&first).await.is_none(), "its instance is terminated");
    h.settled().await;
}

/// The NodePool `default` and `pods`, passes until they run: the one
/// NodeClaim opened for them.
async fn one_claim_for(h: &mut Harness, pods: &[&str]) -> serde_json::Value {
    h.server.put(support::harness::node_pool());
    for pod in pods {
        h.server.put(support::harness::pod(pod));
    }
    for _ in 0..6 {
        h.pass().await;
    }
    let claims = h.server.list("NodeClaim");
    assert_eq!(claims.len(), 1, "{claims:#?}");
    claims[0].clone()
}

/// The reference that makes a NodeClaim the NodePool `default`'s.
fn owned_by_default(h: &Harness) -> serde_json::Value {
    let pool = h.server.get("NodePool", "", "default").unwrap();
    serde_json::json!([{ "apiVersion": "nodewright.io/v1alpha1", "kind": "NodePool", "name": "default", "uid": pool["metadata"]["uid"], "blockOwnerDeletion": true }])
}

/// kubectl delete nodepool: the garbage collector deletes `claim`, which
/// its finalizer holds while the controller drains it; passes until it is
/// gone, its instance terminated.
async fn delete_the_nodepool_until_its_claim_is_gone(h: &mut Harness, claim: &str) {
    assert_eq!(h.server.delete("NodePool", "", "default"), 200);
    assert!(h.server.get("NodePool", "", "default").is_none());
    assert!(h.server.get("NodeClaim", "", claim).unwrap()["metadata"]["deletionTimestamp"].is_string(), "collected with its NodePool");
    let mut passes = 0;
    while h.server.get("NodeClaim", "", claim).is_some() {
        h.pass().await;
        passes += 1;
        assert!(passes < 20, "the claim is still there after {passes} passes: {:#?}", h.server.get("NodeClaim", "", claim));
    }
    assert!(h.cloud_instance(claim).await.is_none(), "the instance of {claim} is terminated");
}

/// A NodeClaim an earlier version made without an owner: becoming leader
/// gives it its NodePool as owner, so deleting the NodePool collects it.
#[tokio::test]
async fn a_nodeclaim_made_without_an_owner_is_given_its_nodepool_and_collected_with_it() {
    let mut h = Harness::new();
    let claim = one_claim_for(&mut h, &["web-1"]).await;
    let name = claim["metadata"]["name"].as_str().unwrap().to_string();
    // As an earlier version wrote it.
    assert_eq!(h.server.patch("NodeClaim", "", &name, &serde_json::json!({ "metadata": { "ownerReferences": null } })), 200);
    assert!(h.server.get("NodeClaim", "", &name).unwrap()["metadata"]["ownerReferences"].is_null());
    assert_eq!(h.cluster.own_node_claims().await.unwrap(), vec![name.clone()]);
    assert_eq!(h.server.get("NodeClaim", "", &name).unwrap()["metadata"]["ownerReferences"], owned_by_default(&h));
    // Once is enough: nothing more to own.
    assert_eq!(h.cluster.own_node_claims().await.unwrap(), Vec::<String>::new());
    delete_the_nodepool_until_its_claim_is_gone(&mut h, &name).await;
    assert_eq!(h.server.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn deleting_a_nodepool_has_its_nodeclaims_collected_drained_and_terminated_and_its_pods_wait_for_another() {
    let mut h = Harness::new();
    // (The stand-in workload controller keeps web-1 and web-2; no budget.)
    let claim = one_claim_for(&mut h, &["web-1", "web-2"]).await;
    let node = claim["status"]["nodeName"].as_str().expect("the claim knows its node").to_string();
    // Owned by its NodePool, as Karpenter's NodeClaims are.
    assert_eq!(claim["metadata"]["ownerReferences"], owned_by_default(&h));
    let claim = claim["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(h.running(), 2);
    delete_the_nodepool_until_its_claim_is_gone(&mut h, &claim).await;
    assert!(h.server.get("Node", "", &node).is_none());
    let mut evictions = h.server.evictions();
    evictions.sort();
    assert_eq!(evictions, vec![("shop/web-1".to_string(), true), ("shop/web-2".to_string(), true)], "the pods left through the Eviction API");
    // No NodePool: the pod waits, and nothing is launched for it.
    for _ in 0..3 {
        h.pass().await;
    }
    assert!(h.server.list("NodeClaim").is_empty());
    assert!(h.cloud.instances().await.unwrap().is_empty(), "no instance leaked");
    for name in ["web-1", "web-2"] {
        let pod = h.server.get("Pod", "shop", name).unwrap();
        assert_eq!((pod["status"]["phase"].as_str(), pod["spec"]["nodeName"].as_str()), (Some("Pending"), None), "{pod:#}");
    }
    // A NodePool again: the pod gets a node.
    h.server.put(support::harness::node_pool());
    for _ in 0..6 {
        h.pass().await;
    }
    assert_eq!(h.running(), 2);
    assert_eq!(h.server.unexpected(), Vec::<String>::new());
}
