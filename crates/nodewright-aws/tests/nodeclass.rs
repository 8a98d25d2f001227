//! Karpenter's EC2NodeClass against moto: every example reads unchanged,
//! and one with an `al2023@latest` alias, subnet and security-group terms
//! and a kubelet `maxPods` resolves and launches with the launch template it
//! implies, field by field.

#[path = "../../nodewright-core/tests/common/mod.rs"]
mod common;
mod moto;

use std::collections::BTreeSet;
use std::path::PathBuf;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use base64::Engine;
use moto::Moto;
use nodewright_aws::ec2::Ec2Cloud;
use nodewright_aws::nodeclass::{Ec2NodeClass, parse_node_classes};
use nodewright_core::cloud::{CloudProvider, LaunchRequest};
use nodewright_core::model::{CapacityType, Resources, bundled_instance_types};

const AL2023: &str = "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id";

#[test]
fn every_karpenter_v1_example_node_class_reads_unchanged() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nodewright-core/tests/fixtures/karpenter-v1");
    let mut read = 0;
    let mut refused = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let classes = parse_node_classes(&name, &std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(classes.len(), 1, "{name}");
        read += 1;
        // What nodewright cannot launch yet is refused naming the field.
        if let Err(e) = Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31") {
            refused.insert(e.split(": ").nth(1).unwrap_or_default().to_string());
        }
    }
    assert_eq!(read, 22);
    // Only the Windows ones, for their family or alias.
    let expected = ["spec.amiFamily", "spec.amiSelectorTerms[0].alias"];
    assert_eq!(refused, expected.iter().map(|f| f.to_string()).collect());
}

fn tagged(resource: ResourceType, key: &str, value: &str) -> TagSpecification {
    TagSpecification::builder().resource_type(resource).tags(Tag::builder().key(key).value(value).build()).build()
}

/// A VPC with two subnets and a security group tagged for `my-cluster`,
/// a third subnet and two groups that are not, one named `extra`:
/// (the tagged subnets, the tagged group, `extra`).
async fn network(ec2: &aws_sdk_ec2::Client) -> (BTreeSet<String>, String, String) {
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
    let mut selected = BTreeSet::new();
    for (i, zone) in ["us-east-1a", "us-east-1b", "us-east-1c"].into_iter().enumerate() {
        let mut request = ec2.create_subnet().vpc_id(&vpc).cidr_block(format!("10.0.{i}.0/24")).availability_zone(zone);
        // The third subnet is not the cluster's.
        if i < 2 {
            request = request.tag_specifications(tagged(ResourceType::Subnet, "karpenter.sh/discovery", "my-cluster"));
        }
        let id = request.send().await.unwrap().subnet().unwrap().subnet_id().unwrap().to_string();
        if i < 2 {
            selected.insert(id);
        }
    }
    let group = |name: &str, tag: bool| {
        let mut request = ec2.create_security_group().group_name(name).description(name).vpc_id(&vpc);
        if tag {
            request = request.tag_specifications(tagged(ResourceType::SecurityGroup, "karpenter.sh/discovery", "my-cluster"));
        }
        async move { request.send().await.unwrap().group_id().unwrap().to_string() }
    };
    let nodes = group("nodes", true).await;
    let extra = group("extra", false).await;
    group("other", false).await;
    (selected, nodes, extra)
}

/// A launch of one on-demand m5.large in us-east-1a for claim `claim`.
fn m5_large(cloud: &Ec2Cloud, claim: &str) -> LaunchRequest {
    let offering = cloud
        .catalog()
        .offerings
        .iter()
        .position(|o| o.instance_type == "m5.large" && o.capacity_type == CapacityType::OnDemand && o.zone == "us-east-1a")
        .unwrap() as u32;
    LaunchRequest {
        claim: claim.into(),
        node_pool: "default".into(),
        offerings: vec![offering],
        requests: Resources::default(),
        taints: Vec::new(),
        spot_strategy: Default::default(),
        node_class: None,
        catalog_version: None,
    }
}

const CLASS: &str = r#"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: default
spec:
  instanceProfile: KarpenterNodeInstanceProfile-my-cluster
  amiSelectorTerms:
    - alias: al2023@latest
  subnetSelectorTerms:
    - tags:
        karpenter.sh/discovery: my-cluster
  securityGroupSelectorTerms:
    - tags:
        karpenter.sh/discovery: my-cluster
    - name: extra
  kubelet:
    maxPods: 42
  blockDeviceMappings:
    - deviceName: /dev/xvda
      ebs:
        volumeSize: 100Gi
        volumeType: gp3
        encrypted: true
  metadataOptions:
    httpPutResponseHopLimit: 2
  detailedMonitoring: true
  tags:
    team: payments
"#;

#[tokio::test(flavor = "current_thread")]
async fn an_al2023_alias_class_resolves_and_launches_with_its_launch_template() {
    let moto = Moto::start_with_public_parameters(&[(AL2023, "@amazon-x86_64")]);
    let ec2 = moto.ec2();
    let ami = moto.ssm().get_parameter().name(AL2023).send().await.unwrap().parameter().unwrap().value().unwrap().to_string();
    let (selected, nodes, extra) = network(&ec2).await;
    let classes = parse_node_classes("class.yaml", CLASS).unwrap();
    let class = Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31").unwrap();
    let cloud = Ec2Cloud::discover(ec2.clone(), "my-cluster", class, &bundled_instance_types()).await.unwrap().with_ssm(moto.ssm());
    let request = m5_large(&cloud, "default-abcde");
    // The kubelet's maxPods is what the scheduler counts on.
    assert_eq!(cloud.catalog().offerings[request.offerings[0] as usize].allocatable.pods, 42);
    let instance = cloud.launch(&request).await.unwrap();

    // The launch template, field by field.
    let templates = ec2.describe_launch_templates().send().await.unwrap();
    assert_eq!(templates.launch_templates().len(), 1);
    let name = templates.launch_templates()[0].launch_template_name().unwrap().to_string();
    let versions = ec2.describe_launch_template_versions().launch_template_name(&name).send().await.unwrap();
    let data = versions.launch_template_versions()[0].launch_template_data().unwrap();
    assert_eq!(data.image_id(), Some(ami.as_str()), "the alias's AMI, from the public parameter");
    let groups: BTreeSet<&str> = data.security_group_ids().iter().map(String::as_str).collect();
    assert_eq!(groups, BTreeSet::from([nodes.as_str(), extra.as_str()]), "by tag, and by name");
    assert_eq!(data.iam_instance_profile().and_then(|p| p.name()), Some("KarpenterNodeInstanceProfile-my-cluster"));
    let devices = data.block_device_mappings();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_name(), Some("/dev/xvda"));
    let ebs = devices[0].ebs().unwrap();
    assert_eq!((ebs.volume_size(), ebs.volume_type().map(|t| t.as_str()), ebs.encrypted()), (Some(100), Some("gp3"), Some(true)));
    let metadata = data.metadata_options().unwrap();
    assert_eq!(metadata.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(metadata.http_put_response_hop_limit(), Some(2));
    assert_eq!(metadata.http_endpoint().map(|e| e.as_str()), Some("enabled"));
    assert_eq!(data.monitoring().and_then(|m| m.enabled()), Some(true));
    let user_data = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data.user_data().unwrap()).unwrap()).unwrap();
    assert!(user_data.contains("Content-Type: application/node.eks.aws"), "{user_data}");
    assert!(user_data.contains("kind: NodeConfig") && user_data.contains("name: my-cluster") && user_data.contains("maxPods: 42"), "{user_data}");
    let tagged_instance = data.tag_specifications().iter().find(|t| t.resource_type() == Some(&ResourceType::Instance)).unwrap();
    assert!(tagged_instance.tags().iter().any(|t| t.key() == Some("team") && t.value() == Some("payments")));

    // The instance runs in one of the selected subnets, on the alias's AMI.
    let described = ec2.describe_instances().instance_ids(&instance.id).send().await.unwrap();
    let running = &described.reservations()[0].instances()[0];
    assert!(selected.contains(running.subnet_id().unwrap()), "{:?} not in {selected:?}", running.subnet_id());
    assert_eq!(running.image_id(), Some(ami.as_str()));
}

#[tokio::test(flavor = "current_thread")]
async fn a_class_whose_terms_select_nothing_fails_the_launch_saying_which() {
    let moto = Moto::start_with_public_parameters(&[(AL2023, "@amazon-x86_64")]);
    let classes = parse_node_classes("class.yaml", CLASS).unwrap();
    let class = Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31").unwrap();
    let cloud = Ec2Cloud::discover(moto.ec2(), "my-cluster", class, &bundled_instance_types()).await.unwrap().with_ssm(moto.ssm());
    let request = m5_large(&cloud, "c");
    let err = cloud.launch(&request).await.unwrap_err().to_string();
    assert!(err.contains("no subnet matches the node class's subnetSelectorTerms"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_ami_behind_the_class_drifts_the_instances_launched_before_it() {
    let moto = Moto::start();
    let ec2 = moto.ec2();
    network(&ec2).await;
    let images: Vec<String> = ec2
        .describe_images()
        .owners("amazon")
        .filters(aws_sdk_ec2::types::Filter::builder().name("architecture").values("x86_64").build())
        .send()
        .await
        .unwrap()
        .images()
        .iter()
        .filter_map(|i| i.image_id().map(String::from))
        .collect();
    // Any name outside /aws/ works as the alias's parameters do.
    let parameter = "/nodewright/test/node-ami";
    let put = |value: &str| moto.ssm().put_parameter().name(parameter).value(value).overwrite(true).r#type(aws_sdk_ssm::types::ParameterType::String).send();
    put(&images[0]).await.unwrap();
    let text = CLASS.replace("    - alias: al2023@latest\n", &format!("    - ssmParameter: {parameter}\n")).replace("spec:\n", "spec:\n  amiFamily: AL2023\n");
    let classes = parse_node_classes("class.yaml", &text).unwrap();
    let class = Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31").unwrap();
    let cloud = Ec2Cloud::discover(ec2.clone(), "my-cluster", class, &bundled_instance_types()).await.unwrap().with_ssm(moto.ssm());
    let instance = cloud.launch(&m5_large(&cloud, "default-abcde")).await.unwrap();
    assert!(cloud.drifted(&[&instance]).await.unwrap().is_empty(), "launched from the current AMI");
    put(&images[1]).await.unwrap();
    // Within one drift generation what the class resolved to is kept …
    assert!(cloud.drifted(&[&instance]).await.unwrap().is_empty(), "resolved once per five minutes");
    // … and resolved again in the next.
    cloud.forget_drift_resolutions();
    let drifted = cloud.drifted(&[&instance]).await.unwrap();
    assert_eq!(drifted.get(&instance.id).map(String::as_str), Some("AMIDrift"));
    // A launch now takes the new AMI, and does not drift.
    let newer = cloud.launch(&m5_large(&cloud, "default-fghij")).await.unwrap();
    let drifted = cloud.drifted(&[&instance, &newer]).await.unwrap();
    assert_eq!(drifted.len(), 1);
    assert!(!drifted.contains_key(&newer.id));
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_pool_launches_with_the_class_its_node_class_ref_names() {
    let moto = Moto::start_with_public_parameters(&[(AL2023, "@amazon-x86_64")]);
    let ec2 = moto.ec2();
    let (_, nodes, extra) = network(&ec2).await;
    let classes = parse_node_classes("class.yaml", CLASS).unwrap();
    let default = Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31").unwrap();
    // A second class: only the group named `extra`, another instance profile.
    let text = CLASS
        .replace("    - tags:\n        karpenter.sh/discovery: my-cluster\n    - name: extra\n", "    - name: extra\n")
        .replace("KarpenterNodeInstanceProfile-my-cluster", "GpuNodes");
    let second = parse_node_classes("class.yaml", &text).unwrap();
    let gpu = Ec2NodeClass::from_karpenter("gpu", &second[0].spec, "1.31").unwrap();
    let cloud = Ec2Cloud::discover(ec2.clone(), "my-cluster", default.clone(), &bundled_instance_types()).await.unwrap().with_ssm(moto.ssm());
    cloud.set_node_classes(std::collections::BTreeMap::from([("default".to_string(), default), ("gpu".to_string(), gpu)]));
    // Each instance carries its class's name; each class has its template.
    let class_of = |instance: String| {
        let ec2 = ec2.clone();
        async move {
            let described = ec2.describe_instances().instance_ids(&instance).send().await.unwrap();
            let running = described.reservations()[0].instances()[0].clone();
            running.tags().iter().find(|t| t.key() == Some(nodewright_aws::ec2::NODE_CLASS_TAG)).and_then(|t| t.value()).map(String::from)
        }
    };
    for (claim, class) in [("gpu-abcde", "gpu"), ("default-abcde", "default")] {
        let mut request = m5_large(&cloud, claim);
        request.node_class = Some(class.into());
        let instance = cloud.launch(&request).await.unwrap();
        assert_eq!(class_of(instance.id).await.as_deref(), Some(class));
    }
    let mut templates = BTreeSet::new();
    for template in ec2.describe_launch_templates().send().await.unwrap().launch_templates() {
        let name = template.launch_template_name().unwrap();
        let versions = ec2.describe_launch_template_versions().launch_template_name(name).send().await.unwrap();
        let data = versions.launch_template_versions()[0].launch_template_data().unwrap();
        let groups: BTreeSet<String> = data.security_group_ids().iter().cloned().collect();
        templates.insert((data.iam_instance_profile().and_then(|p| p.name()).unwrap().to_string(), groups));
    }
    assert_eq!(
        templates,
        BTreeSet::from([
            ("GpuNodes".to_string(), BTreeSet::from([extra.clone()])),
            ("KarpenterNodeInstanceProfile-my-cluster".to_string(), BTreeSet::from([nodes, extra])),
        ])
    );
    // A NodePool naming a class that is not there: the launch says which.
    let mut request = m5_large(&cloud, "other-abcde");
    request.node_class = Some("nope".into());
    let err = cloud.launch(&request).await.unwrap_err().to_string();
    assert_eq!(err, "launch failed: EC2NodeClass nope (the NodePool's nodeClassRef) is not known");
}

/// A role in moto's IAM that EC2 may assume.
async fn role(iam: &aws_sdk_iam::Client, name: &str) {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role().role_name(name).assume_role_policy_document(trust).send().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_class_naming_a_role_launches_with_an_instance_profile_made_for_it_which_follows_a_changed_role() {
    let moto = Moto::start_with_public_parameters(&[(AL2023, "@amazon-x86_64")]);
    let (ec2, iam) = (moto.ec2(), moto.iam());
    network(&ec2).await;
    role(&iam, "KarpenterNodeRole-my-cluster").await;
    role(&iam, "NodesV2").await;
    let class_with = |role: &str| {
        let text = CLASS.replace("instanceProfile: KarpenterNodeInstanceProfile-my-cluster", &format!("role: {role}"));
        let classes = parse_node_classes("class.yaml", &text).unwrap();
        Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31").unwrap()
    };
    let launch = |role: &'static str, claim: &'static str| {
        let (ec2, iam, ssm) = (ec2.clone(), iam.clone(), moto.ssm());
        let class = class_with(role);
        async move {
            let cloud = Ec2Cloud::discover(ec2, "my-cluster", class, &bundled_instance_types()).await.unwrap().with_ssm(ssm).with_iam(iam, "us-east-1");
            let request = m5_large(&cloud, claim);
            cloud.launch(&request).await.unwrap()
        }
    };
    launch("KarpenterNodeRole-my-cluster", "default-abcde").await;
    let profiles = iam.list_instance_profiles().send().await.unwrap();
    assert_eq!(profiles.instance_profiles().len(), 1);
    let profile = &profiles.instance_profiles()[0];
    let name = profile.instance_profile_name().to_string();
    assert!(name.starts_with("my-cluster_") && name.len() == "my-cluster_".len() + 16, "{name}");
    assert_eq!(profile.path(), "/nodewright/us-east-1/my-cluster/");
    let roles: Vec<&str> = profile.roles().iter().map(|r| r.role_name()).collect();
    assert_eq!(roles, vec!["KarpenterNodeRole-my-cluster"]);
    let got = iam.get_instance_profile().instance_profile_name(&name).send().await.unwrap();
    let tags = got.instance_profile().unwrap().tags();
    let tag = |key: &str| tags.iter().find(|t| t.key() == key).map(|t| t.value().to_string());
    assert_eq!(tag("nodewright.io/ec2nodeclass").as_deref(), Some("default"));
    assert_eq!(tag("kubernetes.io/cluster/my-cluster").as_deref(), Some("owned"));
    // The launch template carries it.
    let templates = ec2.describe_launch_templates().send().await.unwrap();
    let template = templates.launch_templates()[0].launch_template_name().unwrap().to_string();
    let versions = ec2.describe_launch_template_versions().launch_template_name(&template).send().await.unwrap();
    let data = versions.launch_template_versions()[0].launch_template_data().unwrap();
    assert_eq!(data.iam_instance_profile().and_then(|p| p.name()), Some(name.as_str()));

    // The class's role changes (a new process reads it): the same profile
    // now holds the new role only.
    launch("NodesV2", "default-fghjk").await;
    let profiles = iam.list_instance_profiles().send().await.unwrap();
    assert_eq!(profiles.instance_profiles().len(), 1, "one profile per class");
    let roles: Vec<&str> = profiles.instance_profiles()[0].roles().iter().map(|r| r.role_name()).collect();
    assert_eq!(roles, vec!["NodesV2"]);

    // A role IAM does not know fails the launch, naming the call.
    let class = class_with("NoSuchRole");
    let cloud = Ec2Cloud::discover(ec2.clone(), "my-cluster", class, &bundled_instance_types()).await.unwrap().with_ssm(moto.ssm()).with_iam(iam.clone(), "us-east-1");
    let error = cloud.launch(&m5_large(&cloud, "default-klmnp")).await.unwrap_err();
    assert!(error.to_string().contains("AddRoleToInstanceProfile"), "{error}");
    // Without an IAM client, the class's role cannot be honoured: said so.
    let cloud = Ec2Cloud::discover(ec2, "my-cluster", class_with("NodesV2"), &bundled_instance_types()).await.unwrap().with_ssm(moto.ssm());
    let error = cloud.launch(&m5_large(&cloud, "default-qrstv")).await.unwrap_err();
    assert!(error.to_string().contains("EC2NodeClass default: spec.role: no IAM client to make its instance profile"), "{error}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_changed_node_class_drifts_the_instances_launched_under_the_old_one() {
    let moto = Moto::start_with_public_parameters(&[(AL2023, "@amazon-x86_64")]);
    let ec2 = moto.ec2();
    network(&ec2).await;
    let classes = parse_node_classes("class.yaml", CLASS).unwrap();
    let class = Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31").unwrap();
    let cloud = Ec2Cloud::discover(ec2.clone(), "my-cluster", class.clone(), &bundled_instance_types()).await.unwrap().with_ssm(moto.ssm());
    cloud.set_node_classes(std::collections::BTreeMap::from([("team".to_string(), class.clone())]));
    let mut request = m5_large(&cloud, "default-abcde");
    request.node_class = Some("team".into());
    let instance = cloud.launch(&request).await.unwrap();
    assert!(cloud.drifted(&[&instance]).await.unwrap().is_empty());
    // Resolved the same (same AMI, subnets, groups), but a field the class
    // sets directly changed: the hash it was launched under no longer matches.
    let mut changed = class.clone();
    changed.tags.insert("cost-center".into(), "42".into());
    assert_ne!(changed.static_hash(), class.static_hash());
    cloud.set_node_classes(std::collections::BTreeMap::from([("team".to_string(), changed)]));
    let drifted = cloud.drifted(&[&instance]).await.unwrap();
    assert_eq!(drifted.get(&instance.id).map(String::as_str), Some("NodeClassDrift"));
    // What only resolution changes (the Kubernetes version an alias reads) is not the class's hash.
    let mut newer = class.clone();
    newer.kubernetes_version = "1.32".into();
    assert_eq!(newer.static_hash(), class.static_hash());
}
