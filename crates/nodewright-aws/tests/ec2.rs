//! The EC2 provider against moto's server, with the real aws-sdk-ec2 client.
//! moto launches the first override of a fleet and never reports capacity
//! errors, so the tests check the request nodewright builds (the order of
//! offerings it hands over) and the tags on what moto launched; capacity
//! errors are covered by `capacity_errors` on fleet errors built with the
//! SDK's own types.

#[path = "../../nodewright-core/tests/common/mod.rs"]
mod common;
mod moto;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aws_sdk_ec2::types::{CreateFleetError, FleetLaunchTemplateOverrides, LaunchTemplateAndOverridesResponse};
use moto::Moto;
use nodewright_aws::ec2::{AmiSource, CLUSTER_TAG, Ec2Cloud, NODE_CLAIM_TAG, capacity_errors};
use nodewright_core::cloud::{CloudProvider, LaunchRequest};
use nodewright_core::model::{CapacityReservation, CapacityType, Resources};

async fn setup(moto: &Moto) -> Ec2Cloud {
    setup_with(moto, moto.ec2()).await
}

async fn setup_with(moto: &Moto, cloud_client: aws_sdk_ec2::Client) -> Ec2Cloud {
    setup_ami(moto, cloud_client, None).await
}

async fn setup_ami(moto: &Moto, cloud_client: aws_sdk_ec2::Client, ami: Option<AmiSource>) -> Ec2Cloud {
    moto.ec2_cloud(cloud_client, ami).await
}

fn request(cloud: &Ec2Cloud, claim: &str, types: &[&str]) -> LaunchRequest {
    let with_capacity: Vec<(&str, CapacityType)> = types.iter().map(|t| (*t, CapacityType::OnDemand)).collect();
    request_of(cloud, claim, &with_capacity)
}

fn request_of(cloud: &Ec2Cloud, claim: &str, types: &[(&str, CapacityType)]) -> LaunchRequest {
    let catalog = cloud.catalog();
    let offerings = types
        .iter()
        .map(|(t, capacity)| {
            catalog
                .offerings
                .iter()
                .position(|o| o.instance_type == *t && o.zone == "us-east-1a" && o.capacity_type == *capacity)
                .unwrap_or_else(|| panic!("{t} {capacity:?} in us-east-1a is in the catalog")) as u32
        })
        .collect();
    LaunchRequest {
        claim: claim.into(),
        node_pool: "default".into(),
        offerings,
        requests: Resources::default(),
        taints: vec![],
        spot_strategy: Default::default(),
        node_class: None,
        catalog_version: Some(catalog.version),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn discovery_builds_the_catalog_from_what_ec2_offers() {
    let moto = Moto::start();
    let cloud = setup(&moto).await;
    let catalog = cloud.catalog();
    assert!(catalog.offerings.len() > 1000, "{}", catalog.offerings.len());
    let m5: Vec<_> = catalog.offerings.iter().filter(|o| o.instance_type == "m5.large").collect();
    assert!(m5.iter().any(|o| o.capacity_type == CapacityType::Spot) && m5.iter().any(|o| o.capacity_type == CapacityType::OnDemand));
    let on_demand = m5.iter().find(|o| o.capacity_type == CapacityType::OnDemand).unwrap();
    assert_eq!(on_demand.price_per_hour, 0.096, "on-demand prices come from the bundled list");
    assert!(m5.iter().all(|o| o.zone.starts_with("us-east-1")));
    let overrides = nodewright_core::model::parse_price_overrides("p.yaml", "overrides:\n  - instanceType: m5.large\n    price: 0.05\n").unwrap();
    let cloud = cloud.with_price_overrides(&overrides);
    let catalog = cloud.catalog();
    let m5 = catalog.offerings.iter().find(|o| o.instance_type == "m5.large" && o.capacity_type == CapacityType::OnDemand).unwrap();
    assert_eq!(m5.price_per_hour, 0.05, "the user's overrides apply to discovered offerings");
}

#[tokio::test(flavor = "current_thread")]
async fn a_launch_tags_the_instance_and_takes_the_top_ranked_offering() {
    let moto = Moto::start();
    let cloud = setup(&moto).await;
    let launch = request(&cloud, "default-1", &["m6i.large", "m5.large", "c5.large"]);
    let instance = cloud.launch(&launch).await.unwrap();
    assert_eq!(cloud.catalog().offerings[instance.offering as usize].instance_type, "m6i.large");
    assert_eq!(instance.claim, "default-1");
    let listed = cloud.instances().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].claim.as_str(), listed[0].node_pool.as_str()), (instance.id.as_str(), "default-1", "default"));
    let described = moto.ec2().describe_instances().instance_ids(&instance.id).send().await.unwrap();
    let tags: BTreeMap<String, String> = described.reservations()[0].instances()[0]
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect();
    assert_eq!(tags.get(CLUSTER_TAG).map(String::as_str), Some("test-cluster"));
    assert_eq!(tags.get(NODE_CLAIM_TAG).map(String::as_str), Some("default-1"));
    assert_eq!(tags.get("nodewright.io/nodepool").map(String::as_str), Some("default"));
}

#[tokio::test(flavor = "current_thread")]
async fn terminate_is_refused_for_an_instance_without_the_cluster_tag() {
    let moto = Moto::start();
    let cloud = setup(&moto).await;
    let client = moto.ec2();
    let image = moto.amazon_image(0).await;
    let foreign = client.run_instances().image_id(image).min_count(1).max_count(1).send().await.unwrap().instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    let err = cloud.terminate(&foreign).await.unwrap_err();
    assert_eq!(err.0, format!("refusing to terminate {foreign}: it does not carry {CLUSTER_TAG}=test-cluster"));
    let state = client.describe_instances().instance_ids(&foreign).send().await.unwrap().reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_string();
    assert_eq!(state, "running");
}

#[tokio::test(flavor = "current_thread")]
async fn an_owned_instance_no_node_claim_knows_is_collected() {
    let moto = Moto::start();
    let cloud = setup(&moto).await;
    let kept = cloud.launch(&request(&cloud, "default-1", &["m5.large"])).await.unwrap();
    let leaked = cloud.launch(&request(&cloud, "default-2", &["m5.large"])).await.unwrap();
    let claims = HashSet::from(["default-1".to_string()]);
    let collected = cloud.collect_garbage(&claims, Duration::ZERO).await.unwrap();
    assert_eq!(collected, vec![leaked.id.clone()]);
    let left: Vec<String> = cloud.instances().await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(left, vec![kept.id]);
}

#[test]
fn capacity_errors_name_the_offerings_to_bench() {
    let error = |code: &str, instance_type: &str, zone: &str| {
        CreateFleetError::builder()
            .error_code(code)
            .launch_template_and_overrides(
                LaunchTemplateAndOverridesResponse::builder()
                    .overrides(FleetLaunchTemplateOverrides::builder().instance_type(instance_type.into()).availability_zone(zone).build())
                    .build(),
            )
            .build()
    };
    let errors = vec![
        error("InsufficientInstanceCapacity", "m5.large", "us-east-1a"),
        error("InvalidParameterValue", "c5.large", "us-east-1a"),
        error("UnfulfillableCapacity", "r5.large", "us-east-1b"),
    ];
    assert_eq!(
        capacity_errors(&errors),
        vec![("m5.large".to_string(), Some("us-east-1a".to_string())), ("r5.large".to_string(), Some("us-east-1b".to_string()))]
    );
}

/// An SDK interceptor that records every CreateFleet request nodewright
/// sends and, when armed, answers the next on-demand fleet with an
/// InsufficientInstanceCapacity error for its first override (moto never
/// reports capacity errors).
#[derive(Debug, Clone, Default)]
struct FleetTap {
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    fail_on_demand: std::sync::Arc<std::sync::atomic::AtomicBool>,
    inject: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

fn form_value<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.split('&').find_map(|pair| pair.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

impl aws_sdk_ec2::config::Intercept for FleetTap {
    fn name(&self) -> &'static str {
        "fleet-tap"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_ec2::config::RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        let body = context.request().body().bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
        if form_value(&body, "Action") == Some("CreateFleet") {
            let on_demand = form_value(&body, "TargetCapacitySpecification.DefaultTargetCapacityType") == Some("on-demand");
            if on_demand && self.fail_on_demand.load(std::sync::atomic::Ordering::Relaxed) {
                let first = form_value(&body, "LaunchTemplateConfigs.1.Overrides.1.InstanceType").unwrap_or_default().to_string();
                *self.inject.lock().unwrap() = Some(first);
            }
            self.requests.lock().unwrap().push(body);
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_ec2::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _: &aws_sdk_ec2::config::RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        if let Some(instance_type) = self.inject.lock().unwrap().take() {
            let xml = format!(
                r#"<CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><fleetId>fleet-injected</fleetId><errorSet><item><launchTemplateAndOverrides><overrides><instanceType>{instance_type}</instanceType><availabilityZone>us-east-1a</availabilityZone></overrides></launchTemplateAndOverrides><lifecycle>on-demand</lifecycle><errorCode>InsufficientInstanceCapacity</errorCode><errorMessage>We currently do not have sufficient capacity.</errorMessage></item></errorSet><fleetInstanceSet/></CreateFleetResponse>"#
            );
            *context.response_mut().body_mut() = xml.into();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_fleet_request_carries_the_ranking_as_priorities_tags_and_a_client_token() {
    let moto = Moto::start();
    let tap = FleetTap::default();
    let client = aws_sdk_ec2::Client::from_conf(moto.ec2_config().interceptor(tap.clone()).build());
    let cloud = setup_with(&moto, client).await;
    cloud.launch(&request(&cloud, "default-7", &["c6i.large", "m5.large"])).await.unwrap();
    let requests = tap.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let body = &requests[0];
    assert_eq!(form_value(body, "Type"), Some("instant"));
    assert_eq!(form_value(body, "ClientToken"), Some("default-7-od"));
    assert_eq!(form_value(body, "OnDemandOptions.AllocationStrategy"), Some("prioritized"));
    assert_eq!(form_value(body, "TargetCapacitySpecification.TotalTargetCapacity"), Some("1"));
    assert_eq!(form_value(body, "LaunchTemplateConfigs.1.Overrides.1.InstanceType"), Some("c6i.large"));
    assert_eq!(form_value(body, "LaunchTemplateConfigs.1.Overrides.1.Priority"), Some("0.0"));
    assert_eq!(form_value(body, "LaunchTemplateConfigs.1.Overrides.2.InstanceType"), Some("m5.large"));
    assert_eq!(form_value(body, "LaunchTemplateConfigs.1.Overrides.2.Priority"), Some("1.0"));
    assert!(body.contains(&format!("Tag.1.Key={}", CLUSTER_TAG.replace('/', "%2F"))), "{body}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_injected_capacity_error_benches_the_offering_and_the_next_capacity_type_is_tried() {
    let moto = Moto::start();
    let tap = FleetTap::default();
    tap.fail_on_demand.store(true, std::sync::atomic::Ordering::Relaxed);
    let client = aws_sdk_ec2::Client::from_conf(moto.ec2_config().interceptor(tap.clone()).build());
    let cloud = setup_with(&moto, client).await;
    let launch = request_of(&cloud, "default-8", &[("m6i.large", CapacityType::OnDemand), ("m5.large", CapacityType::Spot)]);
    let instance = cloud.launch(&launch).await.unwrap();
    let catalog = cloud.catalog();
    let bought = &catalog.offerings[instance.offering as usize];
    assert_eq!((bought.instance_type.as_str(), bought.capacity_type), ("m5.large", CapacityType::Spot));
    assert!(cloud.unavailable().contains(&launch.offerings[0]), "the on-demand m6i.large is benched for three minutes");
    let requests = tap.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "one fleet per capacity type");
    assert_eq!(form_value(&requests[1], "SpotOptions.AllocationStrategy"), Some("capacity-optimized-prioritized"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_crash_between_create_fleet_and_recording_the_node_claim_is_recovered_without_duplicate_or_leak() {
    use std::sync::Arc;
    use nodewright_core::cluster::{Cluster, NodeClaim, SimulatedCluster};
    use nodewright_core::model::NodePool;
    use nodewright_core::policy::PolicyRegistry;
    use nodewright_core::provisioning::Provisioner;

    let moto = Moto::start();
    let cloud = Arc::new(setup(&moto).await);
    let cluster = Arc::new(SimulatedCluster::new(cloud.catalog(), vec![NodePool::new("default")]));
    let (runtime, _cache) = common::runtime();
    let provisioner = Provisioner::new(cloud.clone(), cluster.clone(), Arc::new(PolicyRegistry::new(runtime)));
    // Before the crash: the NodeClaim was recorded, CreateFleet ran, and the
    // process stopped before recording the instance. A second claim never got launched.
    let launch = request(&cloud, "default-1", &["m5.large"]);
    for name in ["default-1", "default-2"] {
        cluster
            .create_node_claim(NodeClaim {
                name: name.into(),
                node_pool: "default".into(),
                pods: Default::default(),
                requests: Resources::default(),
                offerings: launch.offerings.clone().into(),
                taints: vec![],
                instance: None,
                created_at: std::time::Duration::ZERO,
                pool_hash: String::new(),
                initialized: false,
                deleting: false,
                conditions: Default::default(),
            })
            .await
            .unwrap();
    }
    let launched = cloud.launch(&launch).await.unwrap();
    // After the restart.
    let (adopted, deleted) = provisioner.reconcile().await.unwrap();
    assert_eq!((adopted, deleted), (vec!["default-1".to_string()], vec!["default-2".to_string()]));
    let claims = cluster.node_claims();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].instance.as_ref().map(|i| i.id.clone()), Some(launched.id.clone()));
    // Launching the same claim again is idempotent (same client token), and nothing is leaked.
    let again = cloud.launch(&launch).await.unwrap();
    assert_eq!(again.id, launched.id);
    let known = claims.iter().map(|c| c.name.clone()).collect();
    assert!(cloud.collect_garbage(&known, Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(cloud.instances().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_launch_template_takes_its_ami_from_ssm_and_sizes_the_root_volume() {
    let moto = Moto::start();
    let image = moto.amazon_image(1).await;
    // moto reserves /aws/…, where the EKS-optimised AMI parameters live; any name works the same.
    let parameter = "/nodewright/test/node-ami";
    moto.ssm()
        .put_parameter()
        .name(parameter)
        .value(&image)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let cloud = setup_ami(&moto, moto.ec2(), Some(AmiSource::SsmParameter(parameter.into()))).await.with_ssm(moto.ssm());
    cloud.launch(&request(&cloud, "default-1", &["m5.large"])).await.unwrap();
    let templates = moto.ec2().describe_launch_templates().send().await.unwrap();
    let name = templates.launch_templates()[0].launch_template_name().unwrap().to_string();
    assert!(name.starts_with("nodewright-test-cluster-"), "{name}");
    let versions = moto.ec2().describe_launch_template_versions().launch_template_name(&name).send().await.unwrap();
    let data = versions.launch_template_versions()[0].launch_template_data().unwrap();
    assert_eq!(data.image_id(), Some(image.as_str()));
    let root = &data.block_device_mappings()[0];
    assert_eq!(root.ebs().and_then(|e| e.volume_size()), Some(20));
    // A second launch reuses the template.
    cloud.launch(&request(&cloud, "default-2", &["m5.large"])).await.unwrap();
    assert_eq!(moto.ec2().describe_launch_templates().send().await.unwrap().launch_templates().len(), 1);

    let missing = setup_ami(&moto, moto.ec2(), Some(AmiSource::SsmParameter("/no/such".into()))).await.with_ssm(moto.ssm());
    let err = missing.launch(&request(&missing, "default-3", &["m5.large"])).await.unwrap_err().to_string();
    assert!(err.starts_with("launch failed: SSM GetParameter /no/such: "), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_launch_into_a_capacity_reservation_targets_it_by_id_and_stops_at_its_count() {
    let moto = Moto::start();
    let tap = FleetTap::default();
    let client = aws_sdk_ec2::Client::from_conf(moto.ec2_config().interceptor(tap.clone()).build());
    let id = "cr-0a1b2c3d4e5f60718";
    let reservation = CapacityReservation {
        instance_type: "m5.xlarge".into(),
        zone: "us-east-1a".into(),
        count: 1,
        hourly_rate: 0.192,
        id: Some(id.into()),
        node_classes: None,
    };
    let without_id = CapacityReservation { id: None, ..reservation.clone() };
    let cloud = setup_with(&moto, client).await.with_capacity_reservations(std::slice::from_ref(&reservation)).unwrap();
    let ranked = [("m5.xlarge", CapacityType::Reserved), ("m5.xlarge", CapacityType::OnDemand)];

    // The first launch goes into the reservation: an on-demand fleet whose
    // launch template targets it, the instance tagged with it.
    let first = request_of(&cloud, "default-r1", &ranked);
    let instance = cloud.launch(&first).await.unwrap();
    assert_eq!(instance.offering, first.offerings[0], "the reserved offering");
    assert_eq!(cloud.catalog().offerings[instance.offering as usize].capacity_type, CapacityType::Reserved);
    let requests = tap.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(form_value(&requests[0], "TargetCapacitySpecification.DefaultTargetCapacityType"), Some("on-demand"));
    assert_eq!(form_value(&requests[0], "ClientToken"), Some(format!("default-r1-{id}").as_str()));
    assert_eq!(form_value(&requests[0], "LaunchTemplateConfigs.1.Overrides.1.InstanceType"), Some("m5.xlarge"));
    assert_eq!(form_value(&requests[0], "LaunchTemplateConfigs.1.Overrides.1.AvailabilityZone"), Some("us-east-1a"));
    assert!(form_value(&requests[0], "LaunchTemplateConfigs.1.Overrides.2.InstanceType").is_none(), "one override: the reservation's");
    let template = form_value(&requests[0], "LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName").unwrap().to_string();
    let versions = moto.ec2().describe_launch_template_versions().launch_template_name(&template).send().await.unwrap();
    let data = versions.launch_template_versions()[0].launch_template_data().unwrap();
    let target = data.capacity_reservation_specification().and_then(|c| c.capacity_reservation_target());
    assert_eq!(target.and_then(|t| t.capacity_reservation_id()), Some(id));
    let running = cloud.instances().await.unwrap();
    assert_eq!(running.iter().map(|i| (i.claim.as_str(), i.offering)).collect::<Vec<_>>(), vec![("default-r1", first.offerings[0])]);

    // The reservation is full: the next launch skips it (benched, no
    // request) and buys the next offering on demand, with the plain template.
    let second = request_of(&cloud, "default-r2", &ranked);
    let instance = cloud.launch(&second).await.unwrap();
    assert_eq!(instance.offering, second.offerings[1]);
    assert!(cloud.unavailable().contains(&second.offerings[0]));
    let requests = tap.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(form_value(&requests[1], "ClientToken"), Some("default-r2-od"));
    assert_ne!(form_value(&requests[1], "LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName"), Some(template.as_str()));
    assert_eq!(cloud.instances().await.unwrap().len(), 2);

    let refused = setup(&moto).await.with_capacity_reservations(&[reservation, without_id]).err().unwrap();
    assert_eq!(refused, "capacityReservations[1].id: is required to launch into the reservation");
}

/// A node class's `capacityReservationSelectorTerms` find the active Linux
/// reservations they select in EC2 (by tags, or by id), the class's status
/// lists them, and each becomes a `reserved` offering only that class's
/// NodePools launch, into the reservation by its id.
#[tokio::test(flavor = "current_thread")]
async fn capacity_reservations_a_node_class_selects_are_launched_into_by_its_node_pools_only() {
    use aws_sdk_ec2::types::{CapacityReservationInstancePlatform, InstanceMatchCriteria, ResourceType, Tag, TagSpecification};
    use nodewright_aws::nodeclass::CapacityReservationSelectorTerm;
    use nodewright_core::model::NodePool;
    let moto = Moto::start();
    let tap = FleetTap::default();
    let client = aws_sdk_ec2::Client::from_conf(moto.ec2_config().interceptor(tap.clone()).build());
    let cloud = setup_with(&moto, client).await;
    let reserve = |instance_type: &str, zone: &str, platform: CapacityReservationInstancePlatform, team: Option<&str>| {
        let mut request = moto
            .ec2()
            .create_capacity_reservation()
            .instance_type(instance_type)
            .instance_platform(platform)
            .availability_zone(zone)
            .instance_count(2)
            .instance_match_criteria(InstanceMatchCriteria::Targeted);
        if let Some(team) = team {
            request = request.tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::CapacityReservation)
                    .tags(Tag::builder().key("team").value(team).build())
                    .build(),
            );
        }
        async move { request.send().await.unwrap().capacity_reservation().unwrap().capacity_reservation_id().unwrap().to_string() }
    };
    let ml = reserve("m5.xlarge", "us-east-1a", CapacityReservationInstancePlatform::LinuxUnix, Some("ml")).await;
    let _windows = reserve("m5.xlarge", "us-east-1b", CapacityReservationInstancePlatform::Windows, Some("ml")).await;
    let _web = reserve("c5.large", "us-east-1a", CapacityReservationInstancePlatform::LinuxUnix, Some("web")).await;
    let by_id = reserve("c5.2xlarge", "us-east-1a", CapacityReservationInstancePlatform::LinuxUnix, None).await;

    let base = cloud.catalog();
    let mut gpu = cloud_class(&cloud, "gpu");
    gpu.capacity_reservations = vec![
        CapacityReservationSelectorTerm { tags: BTreeMap::from([("team".to_string(), "ml".to_string())]), ..Default::default() },
        CapacityReservationSelectorTerm { id: Some(by_id.clone()), ..Default::default() },
    ];
    let plain = cloud_class(&cloud, "plain");
    // The Windows reservation and the one of another team are not selected.
    let found = cloud.resolve(&gpu).await.capacity_reservations.unwrap();
    let mut seen: Vec<(&str, &str, &str, u32)> = found.iter().map(|r| (r.id.as_str(), r.instance_type.as_str(), r.zone.as_str(), r.total)).collect();
    seen.sort();
    let mut expected = vec![(ml.as_str(), "m5.xlarge", "us-east-1a", 2), (by_id.as_str(), "c5.2xlarge", "us-east-1a", 2)];
    expected.sort();
    assert_eq!(seen, expected);
    assert!(found.iter().all(|r| r.instance_match_criteria == "targeted" && r.available == 2), "{found:?}");
    assert_eq!(cloud.resolve(&plain).await.capacity_reservations, Ok(vec![]));

    cloud.set_node_classes(BTreeMap::from([("gpu".to_string(), gpu.clone()), ("plain".to_string(), plain.clone())]));
    let catalog = cloud.catalog();
    assert_eq!(catalog.offerings[..base.offerings.len()], base.offerings[..], "the offerings before keep their indices");
    let reserved: Vec<(u32, &str, Option<&Vec<String>>)> = (base.offerings.len()..catalog.offerings.len())
        .map(|i| (i as u32, catalog.offerings[i].instance_type.as_str(), catalog.offerings[i].node_classes.as_ref()))
        .collect();
    let gpu_only = vec!["gpu".to_string()];
    assert_eq!(reserved.len(), 2, "one offering per reservation selected: {reserved:?}");
    assert!(reserved.iter().all(|r| r.2 == Some(&gpu_only) && catalog.offerings[r.0 as usize].capacity_type == CapacityType::Reserved));
    let m5 = reserved.iter().find(|r| r.1 == "m5.xlarge").unwrap().0;
    let pool = |class: Option<&str>| NodePool { node_class: class.map(String::from), ..NodePool::new("p") };
    let offered = |class: Option<&str>| nodewright_core::scheduling::pool_offering_list(&catalog, &pool(class));
    assert!(offered(Some("gpu")).contains(&m5));
    assert!(!offered(Some("plain")).contains(&m5), "another class's NodePools do not launch into it");
    assert!(!offered(None).contains(&m5), "nor do NodePools naming no class (gpu is not the default class)");
    // Resolved and set again with nothing changed: the same catalog.
    cloud.set_node_classes(BTreeMap::from([("gpu".to_string(), gpu), ("plain".to_string(), plain)]));
    assert_eq!(cloud.catalog().version, catalog.version);

    // A gpu NodePool's launch into it targets the reservation by id.
    let mut launch = request_of(&cloud, "gpu-1", &[("m5.xlarge", CapacityType::OnDemand)]);
    launch.offerings.insert(0, m5);
    launch.node_class = Some("gpu".into());
    let instance = cloud.launch(&launch).await.unwrap();
    assert_eq!(instance.offering, m5);
    let requests = tap.requests.lock().unwrap().clone();
    assert_eq!(form_value(&requests[0], "ClientToken"), Some(format!("gpu-1-{ml}").as_str()));
    let template = form_value(&requests[0], "LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName").unwrap().to_string();
    let versions = moto.ec2().describe_launch_template_versions().launch_template_name(&template).send().await.unwrap();
    let data = versions.launch_template_versions()[0].launch_template_data().unwrap();
    let target = data.capacity_reservation_specification().and_then(|c| c.capacity_reservation_target());
    assert_eq!(target.and_then(|t| t.capacity_reservation_id()), Some(ml.as_str()));
    assert_eq!(cloud.instances().await.unwrap().iter().map(|i| i.offering).collect::<Vec<_>>(), vec![m5]);

    // A term naming a reservation that does not exist: the class says so.
    let mut missing = cloud_class(&cloud, "missing");
    missing.capacity_reservations = vec![CapacityReservationSelectorTerm { id: Some("cr-0123456789abcdef0".into()), ..Default::default() }];
    let why = cloud.resolve(&missing).await.capacity_reservations.unwrap_err();
    assert!(why.starts_with("EC2 DescribeCapacityReservations: "), "{why}");
    assert!(why.contains("cr-0123456789abcdef0"), "{why}");
}

/// A copy of the default node class `cloud` was set up with, named `name`.
fn cloud_class(cloud: &Ec2Cloud, name: &str) -> nodewright_aws::ec2::Ec2NodeClass {
    nodewright_aws::ec2::Ec2NodeClass { name: name.into(), ..cloud.default_node_class().clone() }
}

/// A node class whose kubelet settings differ from the default class's
/// gets offerings of its own, sized for them, which only its NodePools
/// launch; its instances are read back as those offerings, and the
/// offerings before keep their indices.
#[tokio::test(flavor = "current_thread")]
async fn a_node_class_with_its_own_kubelet_settings_launches_offerings_sized_for_them() {
    use nodewright_core::model::NodePool;
    let moto = Moto::start();
    let cloud = setup(&moto).await;
    let base = cloud.catalog();
    let mut dense = cloud_class(&cloud, "dense");
    dense.kubelet.max_pods = Some(8);
    let plain = cloud_class(&cloud, "plain");
    cloud.set_node_classes(BTreeMap::from([("dense".to_string(), dense), ("plain".to_string(), plain)]));
    let catalog = cloud.catalog();
    let n = base.offerings.len();
    assert_eq!(catalog.offerings.len(), 2 * n);
    let pool = |class: Option<&str>| NodePool { node_class: class.map(String::from), ..NodePool::new("p") };
    let offered = |class: Option<&str>| nodewright_core::scheduling::pool_offering_list(&catalog, &pool(class));
    assert!(offered(Some("dense")).iter().all(|&o| o as usize >= n && catalog.offerings[o as usize].allocatable.pods == 8));
    assert!(offered(Some("plain")).iter().all(|&o| (o as usize) < n));
    assert_eq!(offered(Some("plain")), offered(None));
    let m5 = catalog.offerings[..n].iter().position(|o| o.instance_type == "m5.large" && o.zone == "us-east-1a" && o.capacity_type == CapacityType::OnDemand).unwrap();
    assert_eq!(catalog.offerings[m5].allocatable, base.offerings[m5].allocatable, "sized as before for the default settings");

    let mut launch = request(&cloud, "dense-1", &["m5.large"]);
    launch.offerings = vec![(n + m5) as u32];
    launch.node_class = Some("dense".into());
    let instance = cloud.launch(&launch).await.unwrap();
    assert_eq!(instance.offering as usize, n + m5);
    let mut plain_launch = request(&cloud, "plain-1", &["m5.large"]);
    plain_launch.node_class = Some("plain".into());
    cloud.launch(&plain_launch).await.unwrap();

    // Offerings chosen from the catalog before a class's settings changed
    // are not launched: the launch is refused, naming why.
    let mut stale = request(&cloud, "dense-2", &["m5.large"]);
    stale.offerings = vec![(n + m5) as u32];
    stale.node_class = Some("dense".into());
    let mut denser = cloud_class(&cloud, "dense");
    denser.kubelet.max_pods = Some(4);
    cloud.set_node_classes(BTreeMap::from([("dense".to_string(), denser), ("plain".to_string(), cloud_class(&cloud, "plain"))]));
    assert_ne!(cloud.catalog().version, catalog.version);
    let refused = cloud.launch(&stale).await.unwrap_err().to_string();
    assert!(refused.contains("the catalog changed since its offerings were chosen"), "{refused}");
    let mut running: Vec<(String, u32)> = cloud.instances().await.unwrap().into_iter().map(|i| (i.claim, i.offering)).collect();
    running.sort();
    assert_eq!(running, vec![("dense-1".to_string(), (n + m5) as u32), ("plain-1".to_string(), m5 as u32)]);
}
