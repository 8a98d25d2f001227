//! EventBridge events as AWS delivers them to the interruption queue.

use serde_json::Value;

/// What a message asks nodewright to do something about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterruptionKind {
    /// `EC2 Spot Instance Interruption Warning`: reclaimed in two minutes.
    SpotInterruption {
        /// The instance.
        instance: String,
    },
    /// `EC2 Instance Rebalance Recommendation`: at elevated risk.
    Rebalance {
        /// The instance.
        instance: String,
    },
    /// `EC2 Instance State-change Notification` to stopping, stopped,
    /// shutting-down or terminated.
    StateChange {
        /// The instance.
        instance: String,
        /// The new state.
        state: String,
    },
    /// `AWS Health Event`, EC2 `scheduledChange` (maintenance, retirement).
    ScheduledChange {
        /// Affected instances.
        instances: Vec<String>,
    },
}

impl InterruptionKind {
    /// Stable name for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            InterruptionKind::SpotInterruption { .. } => "spot-interruption",
            InterruptionKind::Rebalance { .. } => "rebalance",
            InterruptionKind::StateChange { .. } => "state-change",
            InterruptionKind::ScheduledChange { .. } => "scheduled-change",
        }
    }

    /// The instances concerned.
    pub fn instances(&self) -> Vec<&str> {
        match self {
            InterruptionKind::SpotInterruption { instance }
            | InterruptionKind::Rebalance { instance }
            | InterruptionKind::StateChange { instance, .. } => vec![instance.as_str()],
            InterruptionKind::ScheduledChange { instances } => instances.iter().map(String::as_str).collect(),
        }
    }
}

/// Why a message is not acted on (it is logged and deleted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, or a field missing or of the wrong type.
    #[error("message {id}: {field}: {reason}")]
    Malformed {
        /// The SQS message id.
        id: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A well-formed event of a kind nodewright does not handle.
    #[error("message {id}: ignored: {what}")]
    Foreign {
        /// The SQS message id.
        id: String,
        /// What it is.
        what: String,
    },
}

/// States of a state-change notification that take the node away.
const LOST_STATES: [&str; 4] = ["stopping", "stopped", "shutting-down", "terminated"];

/// Parse the body of SQS message `id`.
pub fn parse_message(id: &str, body: &str) -> Result<InterruptionKind, MessageError> {
    let malformed = |field: &str, reason: String| MessageError::Malformed { id: id.into(), field: field.into(), reason };
    let foreign = |what: String| MessageError::Foreign { id: id.into(), what };
    let event: Value = serde_json::from_str(body).map_err(|e| malformed("body", format!("not JSON: {e}")))?;
    let text = |path: &[&str]| -> Result<String, MessageError> {
        let mut at = &event;
        for key in path {
            at = at.get(key).ok_or_else(|| malformed(&path.join("."), "missing".into()))?;
        }
        at.as_str().map(String::from).ok_or_else(|| malformed(&path.join("."), format!("{at} is not a string")))
    };
    let detail_type = text(&["detail-type"])?;
    let source = text(&["source"])?;
    match (source.as_str(), detail_type.as_str()) {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => {
            Ok(InterruptionKind::SpotInterruption { instance: text(&["detail", "instance-id"])? })
        }
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => {
            Ok(InterruptionKind::Rebalance { instance: text(&["detail", "instance-id"])? })
        }
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            let instance = text(&["detail", "instance-id"])?;
            let state = text(&["detail", "state"])?;
            if !LOST_STATES.contains(&state.as_str()) {
                return Err(foreign(format!("state change of {instance} to `{state}`")));
            }
            Ok(InterruptionKind::StateChange { instance, state })
        }
        ("aws.health", "AWS Health Event") => {
            let service = text(&["detail", "service"])?;
            let category = text(&["detail", "eventTypeCategory"])?;
            if service != "EC2" || category != "scheduledChange" {
                return Err(foreign(format!("health event {service}/{category}")));
            }
            let entities = event["detail"]
                .get("affectedEntities")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("detail.affectedEntities", "missing or not a list".into()))?;
            let instances = entities
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    e.get("entityValue").and_then(Value::as_str).map(String::from).ok_or_else(|| {
                        malformed(&format!("detail.affectedEntities[{i}].entityValue"), "missing or not a string".into())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if instances.is_empty() {
                return Err(malformed("detail.affectedEntities", "names no instance".into()));
            }
            Ok(InterruptionKind::ScheduledChange { instances })
        }
        _ => Err(foreign(format!("`{detail_type}` from `{source}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: &str, detail_type: &str, detail: &str) -> String {
        format!(
            r#"{{"version":"0","id":"7bf73129-1428-4cd3-a780-95db273d1602","detail-type":"{detail_type}","source":"{source}","account":"123456789012","time":"2026-11-25T12:00:00Z","region":"us-east-1","resources":[],"detail":{detail}}}"#
        )
    }

    #[test]
    fn each_kind_parses_to_its_instances() {
        let spot = event("aws.ec2", "EC2 Spot Instance Interruption Warning", r#"{"instance-id":"i-1","instance-action":"terminate"}"#);
        assert_eq!(parse_message("m", &spot), Ok(InterruptionKind::SpotInterruption { instance: "i-1".into() }));
        let rebalance = event("aws.ec2", "EC2 Instance Rebalance Recommendation", r#"{"instance-id":"i-2"}"#);
        assert_eq!(parse_message("m", &rebalance), Ok(InterruptionKind::Rebalance { instance: "i-2".into() }));
        let stopping = event("aws.ec2", "EC2 Instance State-change Notification", r#"{"instance-id":"i-3","state":"stopping"}"#);
        assert_eq!(
            parse_message("m", &stopping),
            Ok(InterruptionKind::StateChange { instance: "i-3".into(), state: "stopping".into() })
        );
        let health = event(
            "aws.health",
            "AWS Health Event",
            r#"{"service":"EC2","eventTypeCategory":"scheduledChange","affectedEntities":[{"entityValue":"i-4"},{"entityValue":"i-5"}]}"#,
        );
        assert_eq!(parse_message("m", &health), Ok(InterruptionKind::ScheduledChange { instances: vec!["i-4".into(), "i-5".into()] }));
    }

    #[test]
    fn malformed_and_foreign_messages_say_which_and_why() {
        assert_eq!(
            parse_message("m1", "{not json").unwrap_err().to_string(),
            "message m1: body: not JSON: key must be a string at line 1 column 2"
        );
        let no_instance = event("aws.ec2", "EC2 Spot Instance Interruption Warning", "{}");
        assert_eq!(parse_message("m2", &no_instance).unwrap_err().to_string(), "message m2: detail.instance-id: missing");
        let number = event("aws.ec2", "EC2 Instance Rebalance Recommendation", r#"{"instance-id":7}"#);
        assert_eq!(parse_message("m3", &number).unwrap_err().to_string(), "message m3: detail.instance-id: 7 is not a string");
        let running = event("aws.ec2", "EC2 Instance State-change Notification", r#"{"instance-id":"i-3","state":"running"}"#);
        assert_eq!(parse_message("m4", &running).unwrap_err().to_string(), "message m4: ignored: state change of i-3 to `running`");
        let s3 = event("aws.s3", "Object Created", "{}");
        assert_eq!(parse_message("m5", &s3).unwrap_err().to_string(), "message m5: ignored: `Object Created` from `aws.s3`");
        let rds = event("aws.health", "AWS Health Event", r#"{"service":"RDS","eventTypeCategory":"scheduledChange","affectedEntities":[]}"#);
        assert_eq!(parse_message("m6", &rds).unwrap_err().to_string(), "message m6: ignored: health event RDS/scheduledChange");
        let bad_entity = event("aws.health", "AWS Health Event", r#"{"service":"EC2","eventTypeCategory":"scheduledChange","affectedEntities":[{"x":1}]}"#);
        assert_eq!(
            parse_message("m7", &bad_entity).unwrap_err().to_string(),
            "message m7: detail.affectedEntities[0].entityValue: missing or not a string"
        );
    }
}
