//! The interruption queue on SQS, against moto's server: every message kind,
//! a malformed one, a duplicate, and a burst of 1000 with none lost.

#[path = "../../nodewright-core/tests/common/mod.rs"]
mod common;
mod moto;

use std::time::{Duration, Instant};

use common::interruption::{World, event, spot_warning, world};
use moto::Moto;
use nodewright_core::cloud::SimulatedCloud;
use nodewright_core::cluster::SimulatedCluster;
use nodewright_aws::sqs::SqsQueue;
use nodewright_core::interruption::{InterruptionHandler, Outcome};
use nodewright_core::model::PodSpec;

const GIB: u64 = 1 << 30;

impl World {
    /// A registered node with one pod; its instance id.
    async fn running_node(&self, name: &str) -> String {
        self.cluster.add_pods(PodSpec::requesting(3500, GIB).label("app", name).pods(name, 1));
        let report = self.provisioner.provision().await.unwrap();
        let launched = report.launched.last().unwrap().clone();
        self.register(&launched.claim).unwrap();
        self.cluster.bind(&launched.pods[0], &launched.claim).unwrap();
        launched.instance
    }
}



async fn queue(moto: &Moto, name: &str) -> (aws_sdk_sqs::Client, String) {
    let client = moto.sqs();
    let url = client.create_queue().queue_name(name).send().await.unwrap().queue_url().unwrap().to_string();
    (client, url)
}

async fn send_all(client: &aws_sdk_sqs::Client, url: &str, bodies: &[String]) {
    for chunk in bodies.chunks(10) {
        let mut batch = client.send_message_batch().queue_url(url);
        for (i, body) in chunk.iter().enumerate() {
            batch = batch.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(body).build().unwrap(),
            );
        }
        let sent = batch.send().await.unwrap();
        assert!(sent.failed().is_empty(), "{:?}", sent.failed());
    }
}

/// Poll until `expected` messages have been handled and deleted.
async fn drain_queue(queue: &SqsQueue, handler: &InterruptionHandler<SimulatedCloud, SimulatedCluster>, expected: usize) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let started = Instant::now();
    while outcomes.len() < expected {
        assert!(started.elapsed() < Duration::from_secs(120), "only {} of {expected} messages handled", outcomes.len());
        let report = queue.poll_once(handler, Duration::ZERO).await.unwrap();
        assert_eq!(report.retried, 0);
        assert_eq!(report.deleted, report.received);
        outcomes.extend(report.outcomes);
    }
    outcomes
}

#[tokio::test(flavor = "current_thread")]
async fn every_message_kind_a_malformed_one_and_a_duplicate_are_handled_and_deleted() {
    let moto = Moto::start();
    let (client, url) = queue(&moto, "interruptions").await;
    let w = world(false);
    let spot = w.running_node("a").await;
    let stopping = w.running_node("b").await;
    let maintenance = w.running_node("c").await;
    let rebalance = w.running_node("d").await;
    let bodies = vec![
        spot_warning(&spot),
        spot_warning(&spot),
        event("aws.ec2", "EC2 Instance State-change Notification", &format!(r#"{{"instance-id":"{stopping}","state":"stopping"}}"#)),
        event(
            "aws.health",
            "AWS Health Event",
            &format!(r#"{{"service":"EC2","eventTypeCategory":"scheduledChange","affectedEntities":[{{"entityValue":"{maintenance}"}}]}}"#),
        ),
        event("aws.ec2", "EC2 Instance Rebalance Recommendation", &format!(r#"{{"instance-id":"{rebalance}"}}"#)),
        "this is not an event".to_string(),
    ];
    send_all(&client, &url, &bodies).await;
    let queue = SqsQueue::new(client.clone(), &url);
    let received = Instant::now();
    let mut outcomes = drain_queue(&queue, &w.interruption, bodies.len()).await;
    eprintln!(
        "6 messages (3 replacements) from the first receive to the last delete: {:.0} ms",
        received.elapsed().as_secs_f64() * 1e3
    );
    outcomes.sort_by_key(|o| format!("{o:?}"));
    let kinds: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Replaced { kind, .. } => format!("replaced {kind}"),
            Outcome::Recorded { kind } => format!("recorded {kind}"),
            Outcome::NotOwned { kind } => format!("not-owned {kind}"),
            Outcome::Dropped { .. } => "dropped".into(),
        })
        .collect();
    let mut expected = vec![
        "replaced spot-interruption",
        "not-owned spot-interruption",
        "replaced state-change",
        "replaced scheduled-change",
        "recorded rebalance",
        "dropped",
    ];
    expected.sort();
    let mut kinds_sorted = kinds.clone();
    kinds_sorted.sort();
    assert_eq!(kinds_sorted, expected);
    // Nothing is left on the queue.
    assert!(queue.receive(Duration::ZERO).await.unwrap().is_empty());
    // Three nodes replaced, the rebalanced one kept.
    let claims = w.cluster.node_claims();
    assert_eq!(claims.iter().filter(|c| c.instance.as_ref().is_some_and(|i| i.id == rebalance)).count(), 1);
    assert_eq!(w.cloud.launch_requests().len(), 4 + 3);
}

#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_a_thousand_messages_is_handled_with_none_lost() {
    let moto = Moto::start();
    let (client, url) = queue(&moto, "burst").await;
    let w = world(false);
    let mut instances = Vec::new();
    for i in 0..10 {
        instances.push(w.running_node(&format!("n{i}")).await);
    }
    let bodies: Vec<String> = (0..1000)
        .map(|n| match n % 4 {
            0 => spot_warning(&instances[(n / 4) % instances.len()]),
            1 => "{\"garbage\":".to_string(),
            2 => event("aws.ec2", "EC2 Instance Rebalance Recommendation", r#"{"instance-id":"i-x"}"#),
            _ => spot_warning("i-foreign"),
        })
        .collect();
    send_all(&client, &url, &bodies).await;
    let queue = SqsQueue::new(client, &url);
    let started = Instant::now();
    let outcomes = drain_queue(&queue, &w.interruption, 1000).await;
    let elapsed = started.elapsed();
    assert_eq!(outcomes.len(), 1000);
    let replaced = outcomes.iter().filter(|o| matches!(o, Outcome::Replaced { .. })).count();
    assert_eq!(replaced, 10, "each owned instance replaced exactly once");
    assert!(queue.receive(Duration::ZERO).await.unwrap().is_empty());
    eprintln!(
        "1000 messages through receive → parse → action → delete against moto in {:.2} s ({:.0} messages/s)",
        elapsed.as_secs_f64(),
        1000.0 / elapsed.as_secs_f64()
    );
}
