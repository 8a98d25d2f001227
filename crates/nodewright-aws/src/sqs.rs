//! The interruption queue on SQS (aws-sdk-sqs): long-poll, hand each
//! message to the [`InterruptionHandler`], delete what was handled.

use std::time::Duration;

use aws_sdk_sqs::Client;

use nodewright_core::interruption::{InterruptionHandler, Outcome};
use nodewright_core::cloud::CloudProvider;
use nodewright_core::cluster::Cluster;

/// Longest SQS lets a receive wait.
pub const LONG_POLL: Duration = Duration::from_secs(20);
/// Most messages one receive returns.
pub const BATCH: i32 = 10;

/// A message received from the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueMessage {
    /// SQS message id.
    pub id: String,
    /// Receipt handle, to delete it.
    pub receipt: String,
    /// The body (an EventBridge event).
    pub body: String,
}

/// A queue error (network, permissions, throttling): the poll is retried.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("SQS {operation} on {queue}: {message}")]
pub struct QueueError {
    /// The operation.
    pub operation: &'static str,
    /// The queue URL.
    pub queue: String,
    /// The SDK's message.
    pub message: String,
}

/// The interruption queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollReport {
    /// Messages received.
    pub received: usize,
    /// Messages deleted after handling (or dropping).
    pub deleted: usize,
    /// Messages left on the queue to be retried (the cluster or cloud failed).
    pub retried: usize,
    /// Outcomes, in order.
    pub outcomes: Vec<Outcome>,
}

impl SqsQueue {
    /// The queue at `url`, through `client`.
    pub fn new(client: Client, url: &str) -> Self {
        SqsQueue { client, url: url.into() }
    }

    /// A client from the environment (credentials, region), optionally at `endpoint`.
    pub async fn from_env(url: &str, endpoint: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        SqsQueue::new(Client::new(&loader.load().await), url)
    }

    fn error(&self, operation: &'static str, e: impl std::error::Error) -> QueueError {
        QueueError { operation, queue: self.url.clone(), message: aws_sdk_sqs::error::DisplayErrorContext(e).to_string() }
    }

    /// Receive up to [`BATCH`] messages, waiting up to `wait`.
    pub async fn receive(&self, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(BATCH)
            .wait_time_seconds(wait.as_secs().min(LONG_POLL.as_secs()) as i32)
            .send()
            .await
            .map_err(|e| self.error("ReceiveMessage", e))?;
        Ok(output
            .messages()
            .iter()
            .map(|m| QueueMessage {
                id: m.message_id().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// Delete a handled message.
    pub async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(drop)
            .map_err(|e| self.error("DeleteMessage", e))
    }

    /// Delete handled messages (at most [`BATCH`]) in one call; returns the
    /// receipts SQS could not delete.
    pub async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<String>, QueueError> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let mut request = self.client.delete_message_batch().queue_url(&self.url);
        for (i, receipt) in receipts.iter().enumerate() {
            request = request.entries(
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .map_err(|e| self.error("DeleteMessageBatch", e))?,
            );
        }
        let output = request.send().await.map_err(|e| self.error("DeleteMessageBatch", e))?;
        Ok(output
            .failed()
            .iter()
            .filter_map(|f| f.id().parse::<usize>().ok().and_then(|i| receipts.get(i).cloned()))
            .collect())
    }

    /// One poll: receive, handle each message, then delete (in one batch)
    /// each one whose action has started or that was dropped as malformed or
    /// foreign.
    pub async fn poll_once<C: CloudProvider, K: Cluster>(
        &self,
        handler: &InterruptionHandler<C, K>,
        wait: Duration,
    ) -> Result<PollReport, QueueError> {
        let messages = self.receive(wait).await?;
        let mut report = PollReport { received: messages.len(), ..PollReport::default() };
        let mut handled = Vec::new();
        for message in messages {
            match handler.handle(&message.id, &message.body).await {
                Ok(outcome) => {
                    handled.push(message.receipt);
                    report.outcomes.push(outcome);
                }
                Err(e) => {
                    tracing::warn!(message = %message.id, "left on the queue to retry: {e}");
                    report.retried += 1;
                }
            }
        }
        // A receipt SQS would not delete is deleted one by one; an error
        // leaves the message to come back, which handling twice tolerates.
        for receipt in self.delete_batch(&handled).await? {
            self.delete(&receipt).await?;
        }
        report.deleted = handled.len();
        Ok(report)
    }
}
