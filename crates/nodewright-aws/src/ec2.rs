//! The EC2 [`CloudProvider`] on aws-sdk-ec2: discovery of what can be
//! bought, launch with CreateFleet `instant` (the policy's ranking as
//! override priorities; into a capacity reservation through a launch
//! template that targets it), ownership tags, guarded termination, and the
//! unavailable-offerings cache fed by capacity errors.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
use nodewright_core::model::{Arch, CapacityType, Catalog, InstanceType as TypeFacts, Offering};

/// Tag every instance carries with the cluster's name; nothing without it is touched.
pub const CLUSTER_TAG: &str = "nodewright.io/cluster";
/// Tag with the NodePool's name.
pub const NODE_POOL_TAG: &str = "nodewright.io/nodepool";
/// Tag with the NodeClaim's name.
pub const NODE_CLAIM_TAG: &str = "nodewright.io/nodeclaim";
/// Tag with the name of the node class an instance was launched with (none: the default).
pub const NODE_CLASS_TAG: &str = "nodewright.io/nodeclass";
/// Tag on instances: [`Ec2NodeClass::static_hash`] of the class they were
/// launched with.
pub const NODE_CLASS_HASH_TAG: &str = "nodewright.io/nodeclass-hash";
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

pub use crate::nodeclass::{AmiSource, Ec2NodeClass};

/// The EC2 provider.
pub struct Ec2Cloud {
    client: Client,
    ssm: Option<aws_sdk_ssm::Client>,
    cluster: String,
    /// The class of a launch whose NodePool names none.
    node_class: Arc<Ec2NodeClass>,
    /// Node classes by name, for NodePools' `nodeClassRef`.
    classes: Mutex<BTreeMap<String, Arc<Ec2NodeClass>>>,
    catalog: Mutex<Arc<Catalog>>,
    unavailable: Mutex<HashMap<u32, Instant>>,
    /// Launch templates made, by content hash.
    launch_templates: Mutex<HashMap<u64, String>>,
    /// Instance profiles made for node classes that name a role.
    profiles: Option<crate::iam::InstanceProfiles>,
    /// What each node class resolved to, for drift and for its status: class
    /// name → (drift generation, the class, what it resolved to).
    resolutions: Mutex<HashMap<String, (u64, Ec2NodeClass, Resolution)>>,
    /// The capacity reservations launched into, with their `reserved`
    /// offerings in the catalog.
    reservations: Mutex<Vec<Reservation>>,
    /// The catalog before reservations: the reserved offerings are rebuilt
    /// on it when the reservations change.
    base_catalog: Mutex<Arc<Catalog>>,
    /// The commitments file's reservations (every NodePool's).
    committed: Vec<nodewright_core::model::CapacityReservation>,
    /// Those node classes' `capacityReservationSelectorTerms` found.
    selected: Mutex<Vec<nodewright_core::model::CapacityReservation>>,
    /// The instance types' facts, to size offerings for a class's kubelet settings.
    facts: Vec<TypeFacts>,
    /// The kubelet settings of each node class, by name: a class whose
    /// settings differ from the default class's gets offerings of its own.
    kubelets: Mutex<BTreeMap<String, nodewright_core::model::KubeletConfig>>,
}

/// What a node class resolves to, each part or why it does not (the
/// EC2NodeClass `status` Karpenter writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// (id, zone) of every subnet its terms select.
    pub subnets: Result<Vec<(String, String)>, String>,
    /// (id, name) of every security group its terms select.
    pub security_groups: Result<Vec<(String, String)>, String>,
    /// (id, architecture) of the AMI of each architecture that has one.
    pub amis: Result<Vec<(String, Arch)>, String>,
    /// The instance profile it launches with: named, or made for its role.
    pub instance_profile: Result<Option<String>, String>,
    /// The active capacity reservations its terms select (none without terms).
    pub capacity_reservations: Result<Vec<FoundReservation>, String>,
}

/// A capacity reservation a node class's terms found in EC2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundReservation {
    /// `cr-…`.
    pub id: String,
    /// The instance type it holds.
    pub instance_type: String,
    /// Its availability zone.
    pub zone: String,
    /// Instances it holds in all.
    pub total: u32,
    /// Instances it can still take.
    pub available: u32,
    /// The account that owns it.
    pub owner_id: String,
    /// `open` or `targeted`.
    pub instance_match_criteria: String,
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

/// A tag selector's filter: `"*"` matches any value of the key.
fn tag_filter(key: &str, value: &str) -> Filter {
    if value == "*" { filter("tag-key", key) } else { filter(&format!("tag:{key}"), value) }
}

/// The filters of one selector term: its id (under `id_filter`), its
/// name (under `name_filter`, where the resource has one) and its tags.
fn term_filters(term: &crate::nodeclass::SelectorTerm, id_filter: &str, name_filter: Option<&str>) -> Vec<Filter> {
    let mut filters = Vec::new();
    if let Some(id) = &term.id {
        filters.push(filter(id_filter, id));
    }
    if let (Some(name), Some(name_filter)) = (&term.name, name_filter) {
        filters.push(filter(name_filter, name));
    }
    filters.extend(term.tags.iter().map(|(k, v)| tag_filter(k, v)));
    filters
}

/// What a launch template of `class` holds: the AMI, security groups,
/// instance profile (the class's, or the one made for its role), user data for the AMI family, volumes, instance
/// metadata options, monitoring, the public-IP choice, tags, and the
/// capacity reservation it targets.
pub fn launch_template_data(
    class: &Ec2NodeClass,
    cluster: &str,
    ami: &str,
    security_groups: Vec<String>,
    reservation: Option<&str>,
    instance_profile: Option<&str>,
) -> aws_sdk_ec2::types::RequestLaunchTemplateData {
    use aws_sdk_ec2::types as t;
    use base64::Engine;
    let mut data = t::RequestLaunchTemplateData::builder()
        .image_id(ami)
        .user_data(base64::engine::general_purpose::STANDARD.encode(class.rendered_user_data(cluster)))
        .metadata_options(
            t::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_endpoint(t::LaunchTemplateInstanceMetadataEndpointState::from(class.metadata.http_endpoint.as_str()))
                .http_protocol_ipv6(t::LaunchTemplateInstanceMetadataProtocolIpv6::from(class.metadata.http_protocol_ipv6.as_str()))
                .http_put_response_hop_limit(class.metadata.http_put_response_hop_limit)
                .http_tokens(t::LaunchTemplateHttpTokensState::from(class.metadata.http_tokens.as_str()))
                .build(),
        )
        .monitoring(t::LaunchTemplatesMonitoringRequest::builder().enabled(class.detailed_monitoring).build());
    for (device, size, kind, encrypted, delete) in class.volumes() {
        data = data.block_device_mappings(
            t::LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name(device)
                .ebs(
                    t::LaunchTemplateEbsBlockDeviceRequest::builder()
                        .volume_size(size)
                        .volume_type(t::VolumeType::from(kind.as_str()))
                        .encrypted(encrypted)
                        .delete_on_termination(delete)
                        .build(),
                )
                .build(),
        );
    }
    // A public-IP choice needs the interface spelled out, with the groups on it.
    data = match class.associate_public_ip {
        Some(public) => data.network_interfaces(
            t::LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                .device_index(0)
                .associate_public_ip_address(public)
                .set_groups(Some(security_groups))
                .build(),
        ),
        None => data.set_security_group_ids(Some(security_groups)),
    };
    if let Some(profile) = instance_profile {
        data = data.iam_instance_profile(t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name(profile).build());
    }
    if !class.tags.is_empty() {
        for resource in [t::ResourceType::Instance, t::ResourceType::Volume] {
            let tags: Vec<Tag> = class.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
            data = data.tag_specifications(t::LaunchTemplateTagSpecificationRequest::builder().resource_type(resource).set_tags(Some(tags)).build());
        }
    }
    if let Some(id) = reservation {
        data = data.capacity_reservation_specification(
            t::LaunchTemplateCapacityReservationSpecificationRequest::builder()
                .capacity_reservation_target(t::CapacityReservationTarget::builder().capacity_reservation_id(id).build())
                .build(),
        );
    }
    data.build()
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
            // The node class's kubelet settings (maxPods, reservations) decide what pods can use.
            let kubelet = node_class.kubelet_config();
            for mut offering in facts.offerings(&zone_refs) {
                if kubelet != Default::default() {
                    offering.allocatable = facts.allocatable_with(&kubelet);
                    offering.capacity.pods = facts.pods_with(&kubelet);
                }
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
        let catalog = Arc::new(Catalog::new(offerings));
        Ok(Ec2Cloud {
            client,
            ssm: None,
            cluster: cluster.into(),
            node_class: Arc::new(node_class),
            classes: Mutex::new(BTreeMap::new()),
            catalog: Mutex::new(catalog.clone()),
            unavailable: Mutex::new(HashMap::new()),
            launch_templates: Mutex::new(HashMap::new()),
            reservations: Mutex::new(Vec::new()),
            base_catalog: Mutex::new(catalog),
            committed: Vec::new(),
            selected: Mutex::new(Vec::new()),
            facts: facts.to_vec(),
            kubelets: Mutex::new(BTreeMap::new()),
            profiles: None,
            resolutions: Mutex::new(HashMap::new()),
        })
    }

    /// Apply the user's price overrides (Savings Plans, RIs) to the catalog.
    pub fn with_price_overrides(self, overrides: &[nodewright_core::model::PriceOverride]) -> Self {
        let base = self.base_catalog.lock().expect("catalog lock").with_overrides(overrides);
        *self.base_catalog.lock().expect("catalog lock") = Arc::new(base);
        // The reservations in place were checked when they were set.
        let _ = self.rebuild_reservations();
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
        self.committed = reservations.to_vec();
        self.rebuild_reservations().map_err(|(i, why)| format!("capacityReservations[{i}]: {why}"))?;
        Ok(self)
    }

    /// The catalog again from its base, with a `reserved` offering per
    /// reservation (the commitments file's, then those node classes
    /// selected), appended in that order so the other offerings keep
    /// their indices. A reservation refused: (its index, why).
    fn rebuild_reservations(&self) -> Result<(), (usize, String)> {
        let mut all = self.committed.clone();
        all.extend(self.selected.lock().expect("reservations lock").iter().cloned());
        let base = self.base_catalog.lock().expect("catalog lock").clone();
        let reserved = base.with_reservations(&all)?;
        let count = base.offerings.len();
        let catalog = reserved.with_kubelets(&self.facts, &self.node_class.kubelet_config(), &self.kubelets.lock().expect("kubelets lock"));
        let reservations = all
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some(Reservation { offering: u32::try_from(count + i).ok()?, id: r.id.clone()?, count: r.count }))
            .collect();
        *self.reservations.lock().expect("reservations lock") = reservations;
        let mut current = self.catalog.lock().expect("catalog lock");
        // The version is a hash of every offering (and whom it serves).
        if current.version != catalog.version {
            // Reserved offerings whose index now names another reservation
            // are no longer known to be full.
            self.unavailable.lock().expect("unavailable lock").retain(|&o, _| (o as usize) < count);
            *current = Arc::new(catalog);
        }
        Ok(())
    }

    /// The node classes NodePools may name (`nodeClassRef`), by name,
    /// replacing those set before (a controller refreshes them as they
    /// change). A NodePool naming none launches with the default class.
    ///
    /// The capacity reservations the classes' terms found when they were
    /// last resolved ([`Ec2Cloud::resolve`]) become `reserved` offerings
    /// only those classes' NodePools launch (the catalog changes only when
    /// they do). One of a type or zone the catalog does not sell on demand
    /// is left out.
    pub fn set_node_classes(&self, classes: BTreeMap<String, Ec2NodeClass>) {
        let base = self.base_catalog.lock().expect("catalog lock").clone();
        let previous = self.selected.lock().expect("reservations lock").clone();
        let mut selected: Vec<nodewright_core::model::CapacityReservation> = Vec::new();
        {
            let resolutions = self.resolutions.lock().unwrap_or_else(|e| e.into_inner());
            for (name, class) in &classes {
                let Some((_, seen, resolution)) = resolutions.get(name) else { continue };
                if seen != class {
                    continue;
                }
                // (id, type, zone, instances) of each reservation the class selects.
                let found: Vec<(&str, &str, &str, u32)> = match &resolution.capacity_reservations {
                    Ok(found) => found.iter().map(|r| (r.id.as_str(), r.instance_type.as_str(), r.zone.as_str(), r.total)).collect(),
                    // EC2 did not answer: the reservations this class had stay.
                    Err(_) => previous
                        .iter()
                        .filter(|r| r.node_classes.as_ref().is_some_and(|c| c.contains(name)))
                        .filter_map(|r| Some((r.id.as_deref()?, r.instance_type.as_str(), r.zone.as_str(), r.count)))
                        .collect(),
                };
                for (id, instance_type, zone, count) in found {
                    // One of the commitments file already serves every NodePool.
                    if self.committed.iter().any(|c| c.id.as_deref() == Some(id)) {
                        continue;
                    }
                    let Some(on_demand) =
                        base.offerings.iter().find(|o| o.instance_type == instance_type && o.zone == zone && o.capacity_type == CapacityType::OnDemand)
                    else {
                        continue;
                    };
                    let mut serves = vec![name.clone()];
                    // NodePools naming no class launch with the default one.
                    if *name == self.node_class.name {
                        serves.push(String::new());
                    }
                    match selected.iter_mut().find(|s| s.id.as_deref() == Some(id)) {
                        Some(known) => known.node_classes.get_or_insert_with(Vec::new).extend(serves),
                        None => selected.push(nodewright_core::model::CapacityReservation {
                            instance_type: instance_type.to_string(),
                            zone: zone.to_string(),
                            count,
                            hourly_rate: on_demand.price_per_hour,
                            id: Some(id.to_string()),
                            node_classes: Some(serves),
                        }),
                    }
                }
            }
        }
        selected.sort_by(|a, b| a.id.cmp(&b.id));
        *self.selected.lock().expect("reservations lock") = selected;
        *self.kubelets.lock().expect("kubelets lock") = classes.iter().map(|(name, class)| (name.clone(), class.kubelet_config())).collect();
        // Every reservation kept has an on-demand offering to copy.
        let _ = self.rebuild_reservations();
        *self.classes.lock().expect("classes lock") = classes.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    }

    /// The class of launches whose NodePool names none.
    pub fn default_node_class(&self) -> &Ec2NodeClass {
        &self.node_class
    }

    /// The class a launch for a NodePool naming `name` uses.
    fn class_for(&self, name: Option<&str>) -> Result<Arc<Ec2NodeClass>, CloudError> {
        match name {
            None => Ok(self.node_class.clone()),
            Some(name) => self
                .classes
                .lock()
                .expect("classes lock")
                .get(name)
                .cloned()
                .ok_or_else(|| CloudError(format!("EC2NodeClass {name} (the NodePool's nodeClassRef) is not known"))),
        }
    }

    /// Make the instance profiles of node classes that name a `role`
    /// through `iam`, in `region`.
    pub fn with_iam(mut self, iam: aws_sdk_iam::Client, region: &str) -> Self {
        self.profiles = Some(crate::iam::InstanceProfiles::new(iam, &self.cluster, region));
        self
    }

    /// The instance profile `class` launches with: the one it names, or the
    /// one made for its role.
    async fn instance_profile(&self, class: &Ec2NodeClass) -> Result<Option<String>, CloudError> {
        match (&class.instance_profile, &class.role) {
            (Some(profile), _) => Ok(Some(profile.clone())),
            (None, Some(role)) => {
                let profiles = self
                    .profiles
                    .as_ref()
                    .ok_or_else(|| CloudError(format!("EC2NodeClass {}: spec.role: no IAM client to make its instance profile", class.name)))?;
                profiles.ensure(&class.name, role).await.map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// What node class `class` resolves to now, each part or why it does
    /// not: its subnets, security groups, an AMI per architecture (at least
    /// one), and its instance profile (for a `role`, made if missing).
    /// Resolved again once per drift generation, or when the class changed.
    pub async fn resolve(&self, class: &Ec2NodeClass) -> Resolution {
        let generation = self.drift_generation();
        if let Some((at, seen, resolution)) = self.resolutions.lock().unwrap_or_else(|e| e.into_inner()).get(&class.name)
            && *at == generation
            && seen == class
        {
            return resolution.clone();
        }
        let mut amis = Vec::new();
        let mut failed = Vec::new();
        for arch in [Arch::Amd64, Arch::Arm64] {
            match self.ami_id(class, arch).await {
                Ok(id) => amis.push((id, arch)),
                Err(e) => failed.push(e.0),
            }
        }
        let resolution = Resolution {
            subnets: self.subnets(class).await.map_err(|e| e.0),
            security_groups: self.security_group_details(class).await.map_err(|e| e.0),
            amis: if amis.is_empty() { Err(failed.join("; ")) } else { Ok(amis) },
            instance_profile: self.instance_profile(class).await.map_err(|e| e.0),
            capacity_reservations: self.capacity_reservations(class).await.map_err(|e| e.0),
        };
        self.resolutions.lock().unwrap_or_else(|e| e.into_inner()).insert(class.name.clone(), (generation, class.clone(), resolution.clone()));
        resolution
    }

    /// The active Linux capacity reservations any of `class`'s terms
    /// selects (by id; or by tags, owner and match criteria), by id.
    async fn capacity_reservations(&self, class: &Ec2NodeClass) -> Result<Vec<FoundReservation>, CloudError> {
        let mut found: BTreeMap<String, FoundReservation> = BTreeMap::new();
        for term in &class.capacity_reservations {
            let mut filters = vec![filter("state", "active"), filter("instance-platform", "Linux/UNIX")];
            filters.extend(term.tags.iter().map(|(k, v)| tag_filter(k, v)));
            if let Some(owner) = &term.owner_id {
                filters.push(filter("owner-id", owner));
            }
            if let Some(criteria) = &term.instance_match_criteria {
                filters.push(filter("instance-match-criteria", criteria));
            }
            let mut pages = self
                .client
                .describe_capacity_reservations()
                .set_capacity_reservation_ids(term.id.clone().map(|id| vec![id]))
                .set_filters(Some(filters))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| error("DescribeCapacityReservations", e))?;
                for r in page.capacity_reservations() {
                    let (Some(id), Some(instance_type), Some(zone)) = (r.capacity_reservation_id(), r.instance_type(), r.availability_zone()) else { continue };
                    found.insert(
                        id.to_string(),
                        FoundReservation {
                            id: id.to_string(),
                            instance_type: instance_type.to_string(),
                            zone: zone.to_string(),
                            total: r.total_instance_count().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
                            available: r.available_instance_count().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
                            owner_id: r.owner_id().unwrap_or_default().to_string(),
                            instance_match_criteria: r.instance_match_criteria().map(|c| c.as_str().to_string()).unwrap_or_default(),
                        },
                    );
                }
            }
        }
        Ok(found.into_values().collect())
    }

    /// Forget what node classes resolved to (for drift and for their
    /// status), as the next drift generation (five minutes on) does.
    pub fn forget_drift_resolutions(&self) {
        self.resolutions.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Read AMIs named by SSM parameter through `ssm`.
    pub fn with_ssm(mut self, ssm: aws_sdk_ssm::Client) -> Self {
        self.ssm = Some(ssm);
        self
    }

    /// The value of SSM parameter `name`, an AMI id.
    async fn ami_parameter(&self, name: &str) -> Result<String, CloudError> {
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

    /// The node class's AMI for instances of `arch`: by id, from an SSM
    /// parameter, or by its selector terms (the first term that finds one:
    /// an alias through the public SSM parameters for the cluster's
    /// Kubernetes version; an id, name, owner or tags: the newest image of
    /// that architecture).
    async fn ami_id(&self, class: &Ec2NodeClass, arch: Arch) -> Result<String, CloudError> {
        let ec2_arch = if arch == Arch::Arm64 { "arm64" } else { "x86_64" };
        match &class.ami {
            None => Err(CloudError("the node class names no AMI".into())),
            Some(AmiSource::Id(id)) => Ok(id.clone()),
            Some(AmiSource::SsmParameter(name)) => self.ami_parameter(name).await,
            Some(AmiSource::Terms(terms)) => {
                for term in terms {
                    if let Some(alias) = &term.alias {
                        let name = crate::nodeclass::alias_parameter(alias, &class.kubernetes_version, ec2_arch).map_err(CloudError)?;
                        return self.ami_parameter(&name).await;
                    }
                    if let Some(name) = &term.ssm_parameter {
                        return self.ami_parameter(name).await;
                    }
                    let mut request = self.client.describe_images().filters(filter("architecture", ec2_arch));
                    if let Some(id) = &term.id {
                        request = request.image_ids(id);
                    }
                    if let Some(name) = &term.name {
                        request = request.filters(filter("name", name));
                    }
                    if let Some(owner) = &term.owner {
                        request = request.owners(owner);
                    }
                    for (k, v) in &term.tags {
                        request = request.filters(tag_filter(k, v));
                    }
                    let output = request.send().await.map_err(|e| error("DescribeImages", e))?;
                    let newest = output.images().iter().filter(|i| i.image_id().is_some()).max_by(|a, b| a.creation_date().cmp(&b.creation_date()));
                    if let Some(id) = newest.and_then(|i| i.image_id()) {
                        return Ok(id.to_string());
                    }
                }
                Err(CloudError(format!("no AMI of {ec2_arch} matches the node class's amiSelectorTerms")))
            }
        }
    }

    /// Every subnet matching any of the node class's terms: (id, zone).
    async fn subnets(&self, class: &Ec2NodeClass) -> Result<Vec<(String, String)>, CloudError> {
        let mut subnets: Vec<(String, String)> = Vec::new();
        for term in &class.subnets {
            let request = self.client.describe_subnets().set_filters(Some(term_filters(term, "subnet-id", None)));
            let output = request.send().await.map_err(|e| error("DescribeSubnets", e))?;
            subnets.extend(output.subnets().iter().filter_map(|s| Some((s.subnet_id()?.to_string(), s.availability_zone()?.to_string()))));
        }
        subnets.sort();
        subnets.dedup();
        if subnets.is_empty() {
            return Err(CloudError(format!("no subnet matches the node class's subnetSelectorTerms {:?}", class.subnets)));
        }
        Ok(subnets)
    }

    /// Every security group matching any of the node class's terms.
    async fn security_groups(&self, class: &Ec2NodeClass) -> Result<Vec<String>, CloudError> {
        Ok(self.security_group_details(class).await?.into_iter().map(|(id, _)| id).collect())
    }

    /// Every security group matching any of the node class's terms: (id, name).
    async fn security_group_details(&self, class: &Ec2NodeClass) -> Result<Vec<(String, String)>, CloudError> {
        let mut groups: Vec<(String, String)> = Vec::new();
        for term in &class.security_groups {
            let request = self.client.describe_security_groups().set_filters(Some(term_filters(term, "group-id", Some("group-name"))));
            let output = request.send().await.map_err(|e| error("DescribeSecurityGroups", e))?;
            groups.extend(output.security_groups().iter().filter_map(|g| Some((g.group_id()?.to_string(), g.group_name().unwrap_or_default().to_string()))));
        }
        groups.sort();
        groups.dedup();
        if groups.is_empty() {
            return Err(CloudError(format!("no security group matches the node class's securityGroupSelectorTerms {:?}", class.security_groups)));
        }
        Ok(groups)
    }

    /// The launch template for the node class and instances of `arch`
    /// (targeting capacity reservation `reservation`, if any), created once
    /// per content hash.
    async fn launch_template(&self, class: &Ec2NodeClass, reservation: Option<&str>, arch: Arch) -> Result<String, CloudError> {
        use std::hash::{Hash, Hasher};
        let groups = self.security_groups(class).await?;
        let ami = self.ami_id(class, arch).await?;
        let profile = self.instance_profile(class).await?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&ami, class, &groups, reservation, &profile).hash(&mut hasher);
        let hash = hasher.finish();
        if let Some(name) = self.launch_templates.lock().expect("template lock").get(&hash) {
            return Ok(name.clone());
        }
        let name = format!("nodewright-{}-{hash:016x}", self.cluster);
        let existing = self.client.describe_launch_templates().launch_template_names(&name).send().await;
        if existing.map(|o| o.launch_templates().is_empty()).unwrap_or(true) {
            let data = launch_template_data(class, &self.cluster, &ami, groups, reservation, profile.as_deref());
            self.client
                .create_launch_template()
                .launch_template_name(&name)
                .launch_template_data(data)
                .tag_specifications(tags(ResourceType::LaunchTemplate, &[(CLUSTER_TAG, &self.cluster)]))
                .send()
                .await
                .map_err(|e| error("CreateLaunchTemplate", e))?;
        }
        self.launch_templates.lock().expect("template lock").insert(hash, name.clone());
        Ok(name)
    }

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
        if let Some(version) = request.catalog_version
            && version != catalog.version
        {
            return Err(LaunchError::Provider(format!(
                "the catalog changed since its offerings were chosen (version {version}, now {}): they are chosen again",
                catalog.version
            )));
        }
        let class = self.class_for(request.node_class.as_deref()).map_err(|e| LaunchError::Provider(e.0))?;
        let subnets = self.subnets(&class).await.map_err(|e| LaunchError::Provider(e.0))?;
        // The catalog may have changed since the request was made (a node
        // class's reservations or kubelet settings): offerings it no longer
        // has are not launched.
        let mut remaining: Vec<u32> = request.offerings.iter().copied().filter(|&o| (o as usize) < catalog.offerings.len()).collect();
        let mut tried = 0;
        // One fleet per capacity type and architecture (each architecture
        // has its AMI, so its launch template), in the order the policy
        // ranked them; one per capacity reservation (its own launch
        // template targets it).
        while let Some(&first) = remaining.first() {
            let capacity = catalog.offerings[first as usize].capacity_type;
            let arch = catalog.offerings[first as usize].arch;
            let (batch, template, token, reservation) = if capacity == CapacityType::Reserved {
                remaining.remove(0);
                let Some(reservation) = self.reservations.lock().expect("reservations lock").iter().find(|r| r.offering == first).cloned() else { continue };
                if existing.iter().filter(|i| i.offering == first).count() >= reservation.count as usize {
                    self.mark_unavailable(first);
                    continue;
                }
                let template = self.launch_template(&class, Some(&reservation.id), arch).await.map_err(|e| LaunchError::Provider(e.0))?;
                (vec![first], template, reservation.id.clone(), Some(reservation.id))
            } else {
                let batch: Vec<u32> = remaining
                    .iter()
                    .copied()
                    .filter(|&o| catalog.offerings[o as usize].capacity_type == capacity && catalog.offerings[o as usize].arch == arch)
                    .collect();
                remaining.retain(|o| !batch.contains(o));
                let template = self.launch_template(&class, None, arch).await.map_err(|e| LaunchError::Provider(e.0))?;
                let kind = if capacity == CapacityType::Spot { "spot" } else { "od" };
                (batch, template, if arch == Arch::Arm64 { format!("{kind}-arm64") } else { kind.to_string() }, None)
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
            if let Some(id) = &reservation {
                fleet = fleet.tag_specifications(tags(ResourceType::Instance, &[(CAPACITY_RESERVATION_TAG, id)]));
            }
            if let Some(name) = &request.node_class {
                fleet = fleet.tag_specifications(tags(ResourceType::Instance, &[(NODE_CLASS_TAG, name)]));
            }
            fleet = fleet.tag_specifications(tags(ResourceType::Instance, &[(NODE_CLASS_HASH_TAG, &class.static_hash())]));
            for (k, v) in &class.tags {
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
                // Every copy of it (sized for another class) is out of that capacity too.
                for (o, offering) in catalog.offerings.iter().enumerate() {
                    if offering.capacity_type == capacity
                        && offering.instance_type == instance_type
                        && zone.as_ref().is_none_or(|z| *z == offering.zone)
                        && (capacity != CapacityType::Reserved || batch.contains(&(o as u32)))
                    {
                        self.mark_unavailable(o as u32);
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

    /// Re-resolved for drift at least every five minutes (SSM parameters,
    /// images and tags change outside the cluster's view).
    fn drift_generation(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 300)
    }

    async fn drifted(&self, instances: &[&Instance]) -> Result<HashMap<String, String>, CloudError> {
        let mut drifted = HashMap::new();
        if instances.is_empty() {
            return Ok(drifted);
        }
        let catalog = self.catalog();
        // What each class resolves to ([`Self::resolve`], kept for a drift
        // generation and shared with the classes' status): the passes in
        // between ask EC2 only for the instances.
        let mut resolved: HashMap<Option<String>, (Arc<Ec2NodeClass>, Resolution)> = HashMap::new();
        let arch_of: HashMap<&str, Arch> =
            instances.iter().filter_map(|i| Some((i.id.as_str(), catalog.offerings.get(i.offering as usize)?.arch))).collect();
        for chunk in instances.chunks(200) {
            let ids: Vec<String> = chunk.iter().map(|i| i.id.clone()).collect();
            let output = self.client.describe_instances().set_instance_ids(Some(ids)).send().await.map_err(|e| error("DescribeInstances", e))?;
            for ec2 in output.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = ec2.instance_id() else { continue };
                let Some(&arch) = arch_of.get(id) else { continue };
                let name = ec2.tags().iter().find(|t| t.key() == Some(NODE_CLASS_TAG)).and_then(|t| t.value()).map(String::from);
                if !resolved.contains_key(&name) {
                    // A class no longer known is not checked.
                    let Ok(class) = self.class_for(name.as_deref()) else { continue };
                    let resolution = self.resolve(&class).await;
                    resolved.insert(name.clone(), (class, resolution));
                }
                let (class, resolution) = &resolved[&name];
                let failed = |e: &String| CloudError(e.clone());
                let subnets = resolution.subnets.as_ref().map_err(failed)?;
                let groups: BTreeSet<&str> = resolution.security_groups.as_ref().map_err(failed)?.iter().map(|(id, _)| id.as_str()).collect();
                let ami = resolution
                    .amis
                    .as_ref()
                    .map_err(failed)?
                    .iter()
                    .find(|(_, a)| *a == arch)
                    .map(|(id, _)| id)
                    .ok_or_else(|| CloudError(format!("no AMI of {} matches the node class's amiSelectorTerms", arch.label())))?;
                let own_groups: BTreeSet<&str> = ec2.security_groups().iter().filter_map(|g| g.group_id()).collect();
                let launched_hash = ec2.tags().iter().find(|t| t.key() == Some(NODE_CLASS_HASH_TAG)).and_then(|t| t.value());
                let reason = if launched_hash.is_some_and(|h| h != class.static_hash()) {
                    "NodeClassDrift"
                } else if ec2.image_id().is_some_and(|i| i != ami) {
                    "AMIDrift"
                } else if ec2.subnet_id().is_some_and(|s| !subnets.iter().any(|(id, _)| id == s)) {
                    "SubnetDrift"
                } else if !own_groups.is_empty() && own_groups != groups {
                    "SecurityGroupDrift"
                } else {
                    continue;
                };
                drifted.insert(id.to_string(), reason.to_string());
            }
        }
        Ok(drifted)
    }

    async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        let catalog = self.catalog();
        let reservations = self.reservations.lock().expect("reservations lock").clone();
        Ok(self
            .owned_instances()
            .await?
            .iter()
            .filter_map(|i| {
                let tag = |key: &str| i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value()).map(String::from);
                let instance_type = i.instance_type()?.as_str();
                let zone = i.placement().and_then(|p| p.availability_zone()).unwrap_or_default();
                let reserved = tag(CAPACITY_RESERVATION_TAG).and_then(|id| reservations.iter().find(|r| r.id == id)).map(|r| r.offering);
                let capacity = if i.instance_lifecycle().is_some() { CapacityType::Spot } else { CapacityType::OnDemand };
                let offering = match reserved {
                    Some(offering) => offering,
                    None => {
                        // The copy sized for the instance's class, where it has one.
                        let class = tag(NODE_CLASS_TAG);
                        let same = |o: &Offering| o.instance_type == instance_type && o.zone == zone && o.capacity_type == capacity;
                        let at = catalog.offerings.iter().position(|o| same(o) && o.serves(class.as_deref()));
                        at.or_else(|| catalog.offerings.iter().position(same))? as u32
                    }
                };
                Some(Instance { id: i.instance_id()?.to_string(), claim: tag(NODE_CLAIM_TAG)?, node_pool: tag(NODE_POOL_TAG).unwrap_or_default(), offering })
            })
            .collect())
    }
}
