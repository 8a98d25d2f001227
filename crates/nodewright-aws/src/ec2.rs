//! The EC2 [`CloudProvider`] on aws-sdk-ec2: discovery of what can be
//! bought, launch with CreateFleet `instant` (the policy's ranking as
//! override priorities; into a capacity reservation through a launch
//! template that targets it), ownership tags, guarded termination, and the
//! unavailable-offerings cache fed by capacity errors.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    CreateFleetError, DefaultTargetCapacityType, Filter, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest, FleetType, InstanceType,
    LocationType, FleetOnDemandAllocationStrategy, OnDemandOptionsRequest, ResourceType, SpotAllocationStrategy,
    SpotOptionsRequest, Tag, TagSpecification, TargetCapacitySpecificationRequest,
};

use nodewright_core::cloud::{CloudError, CloudProvider, Instance, LaunchError, LaunchRequest, SpotStrategy, UNAVAILABLE_FOR};
use nodewright_core::model::{CapacityType, Catalog, InstanceType as TypeFacts, Offering};

/// Tag every instance carries with the cluster's name; nothing without it is touched.
pub const CLUSTER_TAG: &str = "nodewright.io/cluster";
/// Tag with the NodePool's name.
pub const NODE_POOL_TAG: &str = "nodewright.io/nodepool";
/// Tag with the NodeClaim's name.
pub const NODE_CLAIM_TAG: &str = "nodewright.io/nodeclaim";
/// Tag with the id of the capacity reservation an instance was launched into.
pub const CAPACITY_RESERVATION_TAG: &str = "nodewright.io/capacity-reservation";

/// Fleet error codes that mean "no capacity for this offering right now".
/// `ReservationCapacityExceeded`: a targeted capacity reservation is full.
const CAPACITY_ERRORS: [&str; 5] = [
    "InsufficientInstanceCapacity",
    "MaxSpotInstanceCountExceeded",
    "UnfulfillableCapacity",
    "SpotMaxPriceTooLow",
    "ReservationCapacityExceeded",
];

/// How nodes are launched (the essentials of an `EC2NodeClass`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2NodeClass {
    /// Subnets: every subnet carrying all these tags.
    pub subnet_tags: BTreeMap<String, String>,
    /// Security groups: every group carrying all these tags.
    pub security_group_tags: BTreeMap<String, String>,
    /// The AMI.
    pub ami: AmiSource,
    /// Root volume size in GiB (gp3, encrypted).
    pub root_volume_gib: i32,
    /// Instance profile name.
    pub instance_profile: Option<String>,
    /// User data (base64 is applied here).
    pub user_data: String,
    /// Extra tags on instances.
    pub tags: BTreeMap<String, String>,
}

/// Where the AMI comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AmiSource {
    /// This AMI id.
    Id(String),
    /// The AMI id stored in this SSM parameter (e.g. the EKS-optimised AMI
    /// `/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id`),
    /// read when the launch template is built.
    SsmParameter(String),
}

/// The EC2 provider.
pub struct Ec2Cloud {
    client: Client,
    ssm: Option<aws_sdk_ssm::Client>,
    cluster: String,
    node_class: Ec2NodeClass,
    catalog: Mutex<Arc<Catalog>>,
    unavailable: Mutex<HashMap<u32, Instant>>,
    /// Launch templates made, by content hash.
    launch_templates: Mutex<HashMap<u64, String>>,
    reservations: Vec<Reservation>,
}

/// A capacity reservation instances are launched into.
#[derive(Debug, Clone)]
struct Reservation {
    /// Its `reserved` offering in the catalog.
    offering: u32,
    id: String,
    count: u32,
}

fn error(operation: &str, e: impl std::error::Error) -> CloudError {
    CloudError(format!("EC2 {operation}: {}", aws_sdk_ec2::error::DisplayErrorContext(e)))
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

impl Ec2Cloud {
    /// Discover what can be bought: the bundled instance facts (prices, max
    /// pods) for every type DescribeInstanceTypes knows, in the zones
    /// DescribeInstanceTypeOfferings lists, on-demand and spot, spot priced
    /// from DescribeSpotPriceHistory (the seeded model where EC2 has none).
    pub async fn discover(client: Client, cluster: &str, node_class: Ec2NodeClass, facts: &[TypeFacts]) -> Result<Self, CloudError> {
        let mut known: HashSet<String> = HashSet::new();
        let mut pages = client.describe_instance_types().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error("DescribeInstanceTypes", e))?;
            known.extend(page.instance_types().iter().filter_map(|t| t.instance_type().map(|t| t.as_str().to_string())));
        }
        let mut zones_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut pages = client.describe_instance_type_offerings().location_type(LocationType::AvailabilityZone).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error("DescribeInstanceTypeOfferings", e))?;
            for o in page.instance_type_offerings() {
                if let (Some(t), Some(zone)) = (o.instance_type(), o.location()) {
                    zones_of.entry(t.as_str().to_string()).or_default().push(zone.to_string());
                }
            }
        }
        let mut spot: HashMap<(String, String), f64> = HashMap::new();
        let mut pages = client.describe_spot_price_history().product_descriptions("Linux/UNIX").into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error("DescribeSpotPriceHistory", e))?;
            for p in page.spot_price_history() {
                if let (Some(t), Some(zone), Some(price)) =
                    (p.instance_type(), p.availability_zone(), p.spot_price().and_then(|s| s.parse::<f64>().ok()))
                {
                    // Newest first: keep the first price seen per type and zone.
                    spot.entry((t.as_str().to_string(), zone.to_string())).or_insert(price);
                }
            }
        }
        let mut offerings = Vec::new();
        for facts in facts.iter().filter(|f| known.contains(&f.name)) {
            let Some(zones) = zones_of.get(&facts.name) else { continue };
            let mut zones = zones.clone();
            zones.sort();
            zones.dedup();
            let zone_refs: Vec<&str> = zones.iter().map(String::as_str).collect();
            for mut offering in facts.offerings(&zone_refs) {
                if offering.capacity_type == CapacityType::Spot
                    && let Some(&price) = spot.get(&(offering.instance_type.clone(), offering.zone.clone()))
                    && price > 0.0
                    && price < facts.on_demand_price
                {
                    offering.price_per_hour = price;
                }
                offerings.push(offering);
            }
        }
        Ok(Ec2Cloud {
            client,
            ssm: None,
            cluster: cluster.into(),
            node_class,
            catalog: Mutex::new(Arc::new(Catalog::new(offerings))),
            unavailable: Mutex::new(HashMap::new()),
            launch_templates: Mutex::new(HashMap::new()),
            reservations: Vec::new(),
        })
    }

    /// Apply the user's price overrides (Savings Plans, RIs) to the catalog.
    pub fn with_price_overrides(self, overrides: &[nodewright_core::model::PriceOverride]) -> Self {
        let catalog = self.catalog().with_overrides(overrides);
        *self.catalog.lock().expect("catalog lock") = Arc::new(catalog);
        self
    }

    /// Launch into these capacity reservations (targeted, by id, as
    /// Karpenter does): each becomes a `reserved` offering; a launch into it
    /// names it in its launch template and stops at its count. A reservation
    /// without an id, or of a type not sold in its zone: `capacityReservations[i]…: why`.
    pub fn with_capacity_reservations(mut self, reservations: &[nodewright_core::model::CapacityReservation]) -> Result<Self, String> {
        if let Some(i) = reservations.iter().position(|r| r.id.is_none()) {
            return Err(format!("capacityReservations[{i}].id: is required to launch into the reservation"));
        }
        let catalog = self.catalog().with_reservations(reservations).map_err(|(i, why)| format!("capacityReservations[{i}]: {why}"))?;
        self.reservations = reservations
            .iter()
            .filter_map(|r| {
                let offering = catalog.reserved_offering(&r.instance_type, &r.zone)?;
                Some(Reservation { offering, id: r.id.clone()?, count: r.count })
            })
            .collect();
        *self.catalog.lock().expect("catalog lock") = Arc::new(catalog);
        Ok(self)
    }

    /// Read AMIs named by SSM parameter through `ssm`.
    pub fn with_ssm(mut self, ssm: aws_sdk_ssm::Client) -> Self {
        self.ssm = Some(ssm);
        self
    }

    async fn ami_id(&self) -> Result<String, CloudError> {
        match &self.node_class.ami {
            AmiSource::Id(id) => Ok(id.clone()),
            AmiSource::SsmParameter(name) => {
                let ssm = self.ssm.as_ref().ok_or_else(|| CloudError(format!("AMI from SSM parameter {name}: no SSM client")))?;
                let output = ssm
                    .get_parameter()
                    .name(name)
                    .send()
                    .await
                    .map_err(|e| CloudError(format!("SSM GetParameter {name}: {}", aws_sdk_ssm::error::DisplayErrorContext(e))))?;
                output
                    .parameter()
                    .and_then(|p| p.value())
                    .filter(|v| v.starts_with("ami-"))
                    .map(String::from)
                    .ok_or_else(|| CloudError(format!("SSM parameter {name} does not hold an AMI id")))
            }
        }
    }

    async fn subnets(&self) -> Result<Vec<(String, String)>, CloudError> {
        let mut request = self.client.describe_subnets();
        for (k, v) in &self.node_class.subnet_tags {
            request = request.filters(filter(&format!("tag:{k}"), v));
        }
        let output = request.send().await.map_err(|e| error("DescribeSubnets", e))?;
        let subnets: Vec<(String, String)> = output
            .subnets()
            .iter()
            .filter_map(|s| Some((s.subnet_id()?.to_string(), s.availability_zone()?.to_string())))
            .collect();
        if subnets.is_empty() {
            return Err(CloudError(format!("no subnet carries the tags {:?}", self.node_class.subnet_tags)));
        }
        Ok(subnets)
    }

    async fn security_groups(&self) -> Result<Vec<String>, CloudError> {
        let mut request = self.client.describe_security_groups();
        for (k, v) in &self.node_class.security_group_tags {
            request = request.filters(filter(&format!("tag:{k}"), v));
        }
        let output = request.send().await.map_err(|e| error("DescribeSecurityGroups", e))?;
        Ok(output.security_groups().iter().filter_map(|g| g.group_id().map(String::from)).collect())
    }

    /// The launch template for the node class (targeting capacity
    /// reservation `reservation`, if any), created once per content hash.
    async fn launch_template(&self, reservation: Option<&str>) -> Result<String, CloudError> {
        use std::hash::{Hash, Hasher};
        let groups = self.security_groups().await?;
        let ami = self.ami_id().await?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&ami, &self.node_class.user_data, &self.node_class.instance_profile, self.node_class.root_volume_gib, &groups, reservation)
            .hash(&mut hasher);
        let hash = hasher.finish();
        if let Some(name) = self.launch_templates.lock().expect("template lock").get(&hash) {
            return Ok(name.clone());
        }
        let name = format!("nodewright-{}-{hash:016x}", self.cluster);
        let existing = self.client.describe_launch_templates().launch_template_names(&name).send().await;
        if existing.map(|o| o.launch_templates().is_empty()).unwrap_or(true) {
            use base64::Engine;
            let root = aws_sdk_ec2::types::LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name("/dev/xvda")
                .ebs(
                    aws_sdk_ec2::types::LaunchTemplateEbsBlockDeviceRequest::builder()
                        .volume_size(self.node_class.root_volume_gib)
                        .volume_type(aws_sdk_ec2::types::VolumeType::Gp3)
                        .encrypted(true)
                        .delete_on_termination(true)
                        .build(),
                )
                .build();
            let mut data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(&ami)
                .block_device_mappings(root)
                .user_data(base64::engine::general_purpose::STANDARD.encode(&self.node_class.user_data))
                .set_security_group_ids(Some(groups));
            if let Some(profile) = &self.node_class.instance_profile {
                data = data.iam_instance_profile(aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name(profile).build());
            }
            if let Some(id) = reservation {
                data = data.capacity_reservation_specification(
                    aws_sdk_ec2::types::LaunchTemplateCapacityReservationSpecificationRequest::builder()
                        .capacity_reservation_target(aws_sdk_ec2::types::CapacityReservationTarget::builder().capacity_reservation_id(id).build())
                        .build(),
                );
            }
            self.client
                .create_launch_template()
                .launch_template_name(&name)
                .launch_template_data(data.build())
                .tag_specifications(tags(ResourceType::LaunchTemplate, &[(CLUSTER_TAG, &self.cluster)]))
                .send()
                .await
                .map_err(|e| error("CreateLaunchTemplate", e))?;
        }
        self.launch_templates.lock().expect("template lock").insert(hash, name.clone());
        Ok(name)
    }

    /// Pending and running instances carrying this cluster's tag.
    async fn owned_instances(&self) -> Result<Vec<aws_sdk_ec2::types::Instance>, CloudError> {
        let output = self
            .client
            .describe_instances()
            .filters(filter(&format!("tag:{CLUSTER_TAG}"), &self.cluster))
            .filters(Filter::builder().name("instance-state-name").values("pending").values("running").build())
            .send()
            .await
            .map_err(|e| error("DescribeInstances", e))?;
        Ok(output.reservations().iter().flat_map(|r| r.instances().iter().cloned()).collect())
    }

    /// Owned instances that no NodeClaim backs (leaked by a crash between
    /// launch and recording), older than `grace`: terminated and returned.
    pub async fn collect_garbage(&self, claims: &HashSet<String>, grace: Duration) -> Result<Vec<String>, CloudError> {
        let now = std::time::SystemTime::now();
        let mut leaked = Vec::new();
        for instance in self.owned_instances().await? {
            let claim = instance.tags().iter().find(|t| t.key() == Some(NODE_CLAIM_TAG)).and_then(|t| t.value());
            let old = instance
                .launch_time()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= grace);
            if let Some(id) = instance.instance_id()
                && claim.is_none_or(|c| !claims.contains(c))
                && old
            {
                leaked.push(id.to_string());
            }
        }
        for id in &leaked {
            self.terminate(id).await?;
        }
        Ok(leaked)
    }
}

fn tags(resource: ResourceType, pairs: &[(&str, &str)]) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(resource);
    for (k, v) in pairs {
        spec = spec.tags(Tag::builder().key(*k).value(*v).build());
    }
    spec.build()
}

/// (instance type, zone) of the fleet errors that mean "out of capacity".
pub fn capacity_errors(errors: &[CreateFleetError]) -> Vec<(String, Option<String>)> {
    errors
        .iter()
        .filter(|e| e.error_code().is_some_and(|c| CAPACITY_ERRORS.contains(&c)))
        .filter_map(|e| {
            let overrides = e.launch_template_and_overrides()?.overrides()?;
            Some((overrides.instance_type()?.as_str().to_string(), overrides.availability_zone().map(String::from)))
        })
        .collect()
}

impl CloudProvider for Ec2Cloud {
    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.lock().expect("catalog lock").clone()
    }

    fn unavailable(&self) -> HashSet<u32> {
        let now = Instant::now();
        self.unavailable.lock().expect("unavailable lock").iter().filter(|(_, until)| **until > now).map(|(o, _)| *o).collect()
    }

    fn mark_unavailable(&self, index: u32) {
        self.unavailable.lock().expect("unavailable lock").insert(index, Instant::now() + UNAVAILABLE_FOR);
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Instance, LaunchError> {
        // Idempotent per NodeClaim even where a client token is not honoured
        // (expired, or an emulator): an instance tagged with the claim is it.
        let existing = self.instances().await.map_err(|e| LaunchError::Provider(e.0))?;
        if let Some(instance) = existing.iter().find(|i| i.claim == request.claim) {
            return Ok(instance.clone());
        }
        let catalog = self.catalog();
        let template = self.launch_template(None).await.map_err(|e| LaunchError::Provider(e.0))?;
        let subnets = self.subnets().await.map_err(|e| LaunchError::Provider(e.0))?;
        let mut remaining: Vec<u32> = request.offerings.clone();
        let mut tried = 0;
        // One fleet per capacity type, in the order the policy ranked them;
        // one per capacity reservation (its own launch template targets it).
        while let Some(&first) = remaining.first() {
            let capacity = catalog.offerings[first as usize].capacity_type;
            let (batch, template, token, reservation) = if capacity == CapacityType::Reserved {
                remaining.remove(0);
                let Some(reservation) = self.reservations.iter().find(|r| r.offering == first) else { continue };
                if existing.iter().filter(|i| i.offering == first).count() >= reservation.count as usize {
                    self.mark_unavailable(first);
                    continue;
                }
                let template = self.launch_template(Some(&reservation.id)).await.map_err(|e| LaunchError::Provider(e.0))?;
                (vec![first], template, reservation.id.as_str(), Some(reservation.id.as_str()))
            } else {
                let batch: Vec<u32> = remaining.iter().copied().filter(|&o| catalog.offerings[o as usize].capacity_type == capacity).collect();
                remaining.retain(|o| !batch.contains(o));
                (batch, template.clone(), if capacity == CapacityType::Spot { "spot" } else { "od" }, None)
            };
            let mut config = FleetLaunchTemplateConfigRequest::builder()
                .launch_template_specification(FleetLaunchTemplateSpecificationRequest::builder().launch_template_name(&template).version("$Latest").build());
            let mut overrides = 0;
            for (priority, &o) in batch.iter().enumerate() {
                let offering: &Offering = &catalog.offerings[o as usize];
                for (subnet, zone) in subnets.iter().filter(|(_, z)| *z == offering.zone) {
                    config = config.overrides(
                        FleetLaunchTemplateOverridesRequest::builder()
                            .instance_type(InstanceType::from(offering.instance_type.as_str()))
                            .subnet_id(subnet)
                            .availability_zone(zone)
                            .priority(priority as f64)
                            .build(),
                    );
                    overrides += 1;
                }
            }
            if overrides == 0 {
                continue;
            }
            tried += batch.len();
            let (target, spot) = match capacity {
                CapacityType::Spot => (DefaultTargetCapacityType::Spot, true),
                _ => (DefaultTargetCapacityType::OnDemand, false),
            };
            let mut fleet = self
                .client
                .create_fleet()
                .r#type(FleetType::Instant)
                .client_token(format!("{}-{token}", request.claim))
                .launch_template_configs(config.build())
                .target_capacity_specification(
                    TargetCapacitySpecificationRequest::builder().total_target_capacity(1).default_target_capacity_type(target).build(),
                )
                .tag_specifications(tags(
                    ResourceType::Instance,
                    &[(CLUSTER_TAG, &self.cluster), (NODE_POOL_TAG, &request.node_pool), (NODE_CLAIM_TAG, &request.claim)],
                ));
            if let Some(id) = reservation {
                fleet = fleet.tag_specifications(tags(ResourceType::Instance, &[(CAPACITY_RESERVATION_TAG, id)]));
            }
            for (k, v) in &self.node_class.tags {
                fleet = fleet.tag_specifications(tags(ResourceType::Instance, &[(k, v)]));
            }
            fleet = if spot {
                let strategy = match request.spot_strategy {
                    SpotStrategy::Prioritized => SpotAllocationStrategy::CapacityOptimizedPrioritized,
                    SpotStrategy::PriceCapacityOptimized => SpotAllocationStrategy::PriceCapacityOptimized,
                };
                fleet.spot_options(SpotOptionsRequest::builder().allocation_strategy(strategy).build())
            } else {
                fleet.on_demand_options(OnDemandOptionsRequest::builder().allocation_strategy(FleetOnDemandAllocationStrategy::Prioritized).build())
            };
            let output = fleet.send().await.map_err(|e| LaunchError::Provider(error("CreateFleet", e).0))?;
            for (instance_type, zone) in capacity_errors(output.errors()) {
                for &o in &batch {
                    let offering = &catalog.offerings[o as usize];
                    if offering.instance_type == instance_type && zone.as_ref().is_none_or(|z| *z == offering.zone) {
                        self.mark_unavailable(o);
                    }
                }
            }
            let launched = output.instances().iter().find_map(|i| {
                let id = i.instance_ids().first()?.clone();
                let instance_type = i.instance_type()?.as_str().to_string();
                let zone = i.launch_template_and_overrides().and_then(|l| l.overrides()).and_then(|o| o.availability_zone()).map(String::from);
                Some((id, instance_type, zone))
            });
            if let Some((id, instance_type, zone)) = launched {
                let offering = batch
                    .iter()
                    .copied()
                    .find(|&o| {
                        let offering = &catalog.offerings[o as usize];
                        offering.instance_type == instance_type && zone.as_ref().is_none_or(|z| *z == offering.zone)
                    })
                    .unwrap_or(batch[0]);
                return Ok(Instance { id, claim: request.claim.clone(), node_pool: request.node_pool.clone(), offering });
            }
        }
        Err(LaunchError::InsufficientCapacity { tried, skipped: 0 })
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), CloudError> {
        let output = self
            .client
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| error("DescribeInstances", e))?;
        let owned = output
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .any(|i| i.tags().iter().any(|t| t.key() == Some(CLUSTER_TAG) && t.value() == Some(self.cluster.as_str())));
        if !owned {
            return Err(CloudError(format!(
                "refusing to terminate {instance_id}: it does not carry {CLUSTER_TAG}={}",
                self.cluster
            )));
        }
        self.client.terminate_instances().instance_ids(instance_id).send().await.map_err(|e| error("TerminateInstances", e))?;
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        let catalog = self.catalog();
        Ok(self
            .owned_instances()
            .await?
            .iter()
            .filter_map(|i| {
                let tag = |key: &str| i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value()).map(String::from);
                let instance_type = i.instance_type()?.as_str();
                let zone = i.placement().and_then(|p| p.availability_zone()).unwrap_or_default();
                let reserved = tag(CAPACITY_RESERVATION_TAG).and_then(|id| self.reservations.iter().find(|r| r.id == id)).map(|r| r.offering);
                let capacity = if i.instance_lifecycle().is_some() { CapacityType::Spot } else { CapacityType::OnDemand };
                let offering = match reserved {
                    Some(offering) => offering,
                    None => catalog.offerings.iter().position(|o| o.instance_type == instance_type && o.zone == zone && o.capacity_type == capacity)? as u32,
                };
                Some(Instance { id: i.instance_id()?.to_string(), claim: tag(NODE_CLAIM_TAG)?, node_pool: tag(NODE_POOL_TAG).unwrap_or_default(), offering })
            })
            .collect())
    }
}
