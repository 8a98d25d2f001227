//! nodewright on AWS: the EC2 provider ([`ec2::Ec2Cloud`], the
//! `CloudProvider` on CreateFleet) and the SQS consumer of the interruption
//! queue ([`sqs::SqsQueue`], feeding the core's `InterruptionHandler`);
//! [`iam::InstanceProfiles`] makes the instance profile of a node class
//! that names a `role`.
//!
//! Kept apart from `nodewright-core` so the offline commands build without
//! the AWS SDK, which is most of a full build.

pub mod ec2;
pub mod iam;
pub mod nodeclass;
pub mod sqs;
