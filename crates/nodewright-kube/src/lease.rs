//! Leader election on a `coordination.k8s.io/v1` Lease: one replica acts,
//! the others wait. The holder renews the lease every few seconds; a
//! replica takes it over once it has not been renewed for its duration.
//! Every write carries the `resourceVersion` it read, so two replicas racing
//! for an expired lease cannot both win (the loser gets a 409).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

use nodewright_core::cluster::ClusterError;

/// Campaigns for and holds one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    now: Box<dyn Fn() -> k8s_openapi::jiff::Timestamp + Send + Sync>,
}

impl LeaderElector {
    /// Lease `name` in `namespace`, held as `identity` (the pod name) for
    /// `duration` between renewals.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            now: Box::new(k8s_openapi::jiff::Timestamp::now),
        }
    }

    /// Read time from `now` instead of the wall clock (tests).
    pub fn with_clock(mut self, now: impl Fn() -> k8s_openapi::jiff::Timestamp + Send + Sync + 'static) -> Self {
        self.now = Box::new(now);
        self
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime((self.now)());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Take the lease if it is free or expired, renew it if held: true when
    /// this replica is the leader afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, ClusterError> {
        let current = self.api.get_opt(&self.name).await.map_err(|e| ClusterError(format!("get lease {}: {e}", self.name)))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(ClusterError(format!("create lease {}: {e}", self.name))),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder.as_deref() == Some(self.identity.as_str()) {
            self.spec(transitions, spec.acquire_time.clone())
        } else {
            let duration = spec.lease_duration_seconds.map_or(self.duration, |s| Duration::from_secs(s.max(0) as u64));
            let expired = match &spec.renew_time {
                Some(renewed) => {
                    let age = (self.now)().duration_since(renewed.0);
                    age.as_secs_f64() >= duration.as_secs_f64()
                }
                None => true,
            };
            if holder.is_some() && !expired {
                return Ok(false);
            }
            self.spec(transitions + 1, None)
        };
        lease.spec = Some(next);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Someone else wrote it since we read it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(ClusterError(format!("update lease {}: {e}", self.name))),
        }
    }

    /// Give the lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&self) -> Result<(), ClusterError> {
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(|e| ClusterError(format!("get lease {}: {e}", self.name)))? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        lease.spec = Some(spec);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(ClusterError(format!("release lease {}: {e}", self.name))),
        }
    }
}
