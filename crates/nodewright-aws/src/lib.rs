//! nodewright on AWS: the EC2 provider ([`ec2::Ec2Cloud`], the
//! `CloudProvider` on CreateFleet) and the SQS consumer of the interruption
//! queue ([`sqs::SqsQueue`], feeding the core's `InterruptionHandler`).
//!
//! Kept apart from `nodewright-core` so the offline commands build without
//! the AWS SDK, which is most of a full build.

pub mod ec2;
pub mod nodeclass;
pub mod sqs;
