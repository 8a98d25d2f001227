//! Interruption handling on the simulated cloud and cluster.

mod common;

use common::interruption::{World, event, spot_warning, world};
use nodewright_core::cloud::CloudProvider;
use nodewright_core::interruption::Outcome;
use nodewright_core::model::PodSpec;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

const GIB: u64 = 1 << 30;

impl World {
    /// A registered node running `pods` pods named `prefix-*`; returns
    /// (claim, instance id, offering). Single pods ask for 3.5 vCPU so that
    /// each gets a node of its own.
    fn running_node(&self, prefix: &str, pods: usize) -> (String, String, u32) {
        let cpu = if pods == 1 { 3500 } else { 500 };
        self.cluster.add_pods(PodSpec::requesting(cpu, GIB).label("app", prefix).pods(prefix, pods));
        let report = block_on(self.provisioner.provision()).unwrap();
        let launched = report.launched.last().unwrap().clone();
        self.register(&launched.claim).unwrap();
        for pod in &launched.pods {
            self.cluster.bind(pod, &launched.claim).unwrap();
        }
        (launched.claim, launched.instance, launched.offering)
    }

    fn handle(&self, id: &str, body: &str) -> Outcome {
        block_on(self.interruption.handle(id, body)).unwrap()
    }

    fn claims(&self) -> Vec<String> {
        self.cluster.node_claims().into_iter().map(|c| c.name).collect()
    }
}



#[test]
fn a_spot_warning_launches_the_replacement_first_then_drains_and_deletes_the_node() {
    let w = world(false);
    let (claim, instance, offering) = w.running_node("web", 3);
    let started = std::time::Instant::now();
    let outcome = w.handle("m1", &spot_warning(&instance));
    eprintln!("spot warning → replacement launched, node drained and deleted: {:.2} ms", started.elapsed().as_secs_f64() * 1e3);
    assert_eq!(outcome, Outcome::Replaced { kind: "spot-interruption", claims: vec![claim.clone()], replacements: 1, evicted: 3 });
    // The interrupted offering is benched and not offered to the replacement.
    assert!(w.cloud.unavailable().contains(&offering));
    let requests = w.cloud.launch_requests();
    assert_eq!(requests.len(), 2);
    assert!(!requests[1].offerings.contains(&offering));
    // The old node is gone, its instance terminated, its pods pending.
    assert!(!w.claims().contains(&claim));
    let instances = block_on(w.cloud.instances()).unwrap();
    assert!(instances.iter().all(|i| i.id != instance));
    assert_eq!(w.cluster.pending_names().len(), 3);
    // The next pass puts them on the replacement, which is already on its way.
    let report = block_on(w.provisioner.provision()).unwrap();
    assert_eq!((report.pods_on_existing, report.launched.len()), (3, 0));
}

#[test]
fn a_duplicate_message_is_harmless() {
    let w = world(false);
    let (_, instance, _) = w.running_node("web", 2);
    assert!(matches!(w.handle("m1", &spot_warning(&instance)), Outcome::Replaced { .. }));
    assert_eq!(w.handle("m1", &spot_warning(&instance)), Outcome::NotOwned { kind: "spot-interruption" });
    assert_eq!(w.cloud.launch_requests().len(), 2, "no second replacement");
}

#[test]
fn a_message_about_an_instance_this_cluster_does_not_own_changes_nothing() {
    let w = world(false);
    w.running_node("web", 1);
    assert_eq!(w.handle("m1", &spot_warning("i-0123456789abcdef0")), Outcome::NotOwned { kind: "spot-interruption" });
    assert_eq!(w.claims().len(), 1);
}

#[test]
fn malformed_and_foreign_messages_are_dropped_with_their_reason() {
    let w = world(false);
    w.running_node("web", 1);
    assert_eq!(w.handle("bad", "{"), Outcome::Dropped { reason: "message bad: body: not JSON: EOF while parsing an object at line 1 column 1".into() });
    let s3 = event("aws.s3", "Object Created", "{}");
    assert_eq!(w.handle("s3", &s3), Outcome::Dropped { reason: "message s3: ignored: `Object Created` from `aws.s3`".into() });
    assert_eq!(w.claims().len(), 1);
    let counts = w.interruption.counts();
    assert_eq!(counts.get(&("malformed".into(), "dropped".into())), Some(&1));
    assert_eq!(counts.get(&("foreign".into(), "dropped".into())), Some(&1));
}

#[test]
fn a_rebalance_recommendation_is_recorded_unless_configured_to_act() {
    let w = world(false);
    let (_, instance, _) = w.running_node("web", 1);
    let rebalance = event("aws.ec2", "EC2 Instance Rebalance Recommendation", &format!(r#"{{"instance-id":"{instance}"}}"#));
    assert_eq!(w.handle("r", &rebalance), Outcome::Recorded { kind: "rebalance" });
    assert_eq!(w.claims().len(), 1);
    let acting = world(true);
    let (claim, instance, offering) = acting.running_node("web", 1);
    let rebalance = event("aws.ec2", "EC2 Instance Rebalance Recommendation", &format!(r#"{{"instance-id":"{instance}"}}"#));
    assert!(matches!(acting.handle("r", &rebalance), Outcome::Replaced { claims, .. } if claims == vec![claim.clone()]));
    assert!(!acting.cloud.unavailable().contains(&offering), "only a spot warning benches the offering");
}

#[test]
fn a_state_change_and_a_scheduled_change_replace_their_nodes() {
    let w = world(false);
    let (a, instance_a, _) = w.running_node("a", 1);
    let stopping = event("aws.ec2", "EC2 Instance State-change Notification", &format!(r#"{{"instance-id":"{instance_a}","state":"stopping"}}"#));
    assert!(matches!(w.handle("s", &stopping), Outcome::Replaced { kind: "state-change", claims, .. } if claims == vec![a.clone()]));
    let (b, instance_b, _) = w.running_node("b", 1);
    let (c, instance_c, _) = w.running_node("c", 1);
    let health = event(
        "aws.health",
        "AWS Health Event",
        &format!(r#"{{"service":"EC2","eventTypeCategory":"scheduledChange","affectedEntities":[{{"entityValue":"{instance_b}"}},{{"entityValue":"{instance_c}"}}]}}"#),
    );
    match w.handle("h", &health) {
        Outcome::Replaced { kind, mut claims, .. } => {
            claims.sort();
            let mut expected = vec![b, c];
            expected.sort();
            assert_eq!((kind, claims), ("scheduled-change", expected));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_burst_of_a_thousand_messages_is_handled_with_none_lost() {
    let w = world(false);
    let mut instances = Vec::new();
    for i in 0..5 {
        instances.push(w.running_node(&format!("w{i}"), 1).1);
    }
    let mut outcomes = Vec::new();
    for n in 0..1000 {
        let body = match n % 4 {
            0 => spot_warning(&instances[n % instances.len()]),
            1 => "garbage".to_string(),
            2 => event("aws.ec2", "EC2 Instance Rebalance Recommendation", r#"{"instance-id":"i-x"}"#),
            _ => spot_warning("i-foreign"),
        };
        outcomes.push(w.handle(&format!("m{n}"), &body));
    }
    assert_eq!(outcomes.len(), 1000);
    let replaced = outcomes.iter().filter(|o| matches!(o, Outcome::Replaced { .. })).count();
    assert_eq!(replaced, 5, "each owned instance replaced exactly once");
    let total: u64 = w.interruption.counts().values().sum();
    assert_eq!(total, 1000);
}
