//! The node classes of `run`: nodewright's own `EC2NodeClass` and
//! Karpenter's, read as written, turned into launch settings, resolved in
//! EC2, and what became of each written to its `status`.

use anyhow::Context;

use nodewright_kube::crd::EC2NodeClass;

/// The node class `name`: nodewright's own `EC2NodeClass`
/// (`nodewright.io/v1alpha1`), or Karpenter's (`karpenter.k8s.aws/v1`,
/// read unchanged) when there is none of nodewright's by that name, for a
/// cluster on Kubernetes `version` (an AMI alias picks its AMI by it).
pub(super) async fn load_node_class(client: &kube::Client, name: &str, version: &str) -> anyhow::Result<nodewright_aws::ec2::Ec2NodeClass> {
    let (mut classes, reports) = node_classes(client, version).await?;
    // nodewright's own is reported last: its mistake wins over Karpenter's class.
    match reports.iter().rev().find(|r| r.name == name).map(|r| &r.result) {
        Some(Err(e)) => anyhow::bail!("{e}"),
        Some(Ok(())) => classes.remove(name).ok_or_else(|| anyhow::anyhow!("EC2NodeClass {name}: accepted but not kept")),
        None => anyhow::bail!("EC2NodeClass {name}: neither nodewright.io/v1alpha1 nor karpenter.k8s.aws/v1 has one by that name"),
    }
}

/// What became of one node class: which kind it is, its name, its current
/// `Ready` condition, and whether it can be used (or why not).
pub(super) struct ClassReport {
    karpenter: bool,
    name: String,
    /// Its `status` as read.
    status: serde_json::Value,
    result: Result<(), String>,
    /// What it resolved to in EC2, for a class nodewright can use.
    resolution: Option<nodewright_aws::ec2::Resolution>,
}

/// A status condition: (type, status, reason, message).
type Condition = (&'static str, bool, String, String);

/// The status a node class should have: its conditions, and the resolved
/// fields (Karpenter's shape).
fn class_status(report: &ClassReport) -> (Vec<Condition>, serde_json::Map<String, serde_json::Value>) {
    use serde_json::json;
    let mut fields = serde_json::Map::new();
    let Ok(()) = &report.result else {
        let why = report.result.clone().err().unwrap_or_default();
        return (vec![("Ready", false, "Unsupported".into(), why)], fields);
    };
    let Some(r) = &report.resolution else { return (vec![("Ready", true, "Accepted".into(), String::new())], fields) };
    let mut conditions = Vec::new();
    let mut part = |type_: &'static str, result: Result<serde_json::Value, &String>, key: &str| match result {
        Ok(value) => {
            fields.insert(key.into(), value);
            conditions.push((type_, true, type_.to_string(), String::new()));
        }
        Err(why) => conditions.push((type_, false, format!("{}NotReady", type_.trim_end_matches("Ready")), why.clone())),
    };
    part("SubnetsReady", r.subnets.as_ref().map(|s| json!(s.iter().map(|(id, zone)| json!({ "id": id, "zone": zone })).collect::<Vec<_>>())), "subnets");
    part(
        "SecurityGroupsReady",
        r.security_groups.as_ref().map(|g| json!(g.iter().map(|(id, name)| json!({ "id": id, "name": name })).collect::<Vec<_>>())),
        "securityGroups",
    );
    part(
        "AMIsReady",
        r.amis.as_ref().map(|a| {
            json!(a.iter().map(|(id, arch)| json!({ "id": id, "requirements": [{ "key": "kubernetes.io/arch", "operator": "In", "values": [arch.label()] }] })).collect::<Vec<_>>())
        }),
        "amis",
    );
    part("InstanceProfileReady", r.instance_profile.as_ref().map(|p| json!(p)), "instanceProfile");
    part(
        "CapacityReservationsReady",
        r.capacity_reservations.as_ref().map(|found| {
            json!(found
                .iter()
                .map(|c| json!({
                    "id": c.id,
                    "instanceType": c.instance_type,
                    "availabilityZone": c.zone,
                    "ownerID": c.owner_id,
                    "instanceMatchCriteria": c.instance_match_criteria,
                    "totalInstanceCount": c.total,
                    "availableInstanceCount": c.available,
                }))
                .collect::<Vec<_>>())
        }),
        "capacityReservations",
    );
    let failed: Vec<String> = conditions.iter().filter(|c| !c.1).map(|c| format!("{}: {}", c.0, c.3)).collect();
    let ready = if failed.is_empty() { ("Ready", true, "Ready".to_string(), String::new()) } else { ("Ready", false, "NotReady".to_string(), failed.join("; ")) };
    conditions.push(ready);
    (conditions, fields)
}

/// Every node class NodePools may name, by name: Karpenter's
/// (`karpenter.k8s.aws/v1`) and nodewright's own, which wins a name both
/// have; with a report on each (those that cannot be used name their
/// class and field). A kind whose CRD is not installed has none.
pub(super) async fn node_classes(
    client: &kube::Client,
    version: &str,
) -> anyhow::Result<(std::collections::BTreeMap<String, nodewright_aws::ec2::Ec2NodeClass>, Vec<ClassReport>)> {
    let mut classes = std::collections::BTreeMap::new();
    let mut reports = Vec::new();
    let absent = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    let karpenter: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(client.clone(), &karpenter_node_class());
    match karpenter.list(&Default::default()).await {
        Ok(list) => {
            for object in list {
                let name = object.metadata.name.clone().unwrap_or_default();
                let class = serde_path_to_error::deserialize(object.data["spec"].clone())
                    .map_err(|e| format!("EC2NodeClass {name} (karpenter.k8s.aws/v1): spec.{}: {}", e.path(), e.inner()))
                    .and_then(|spec: nodewright_aws::nodeclass::NodeClassSpec| nodewright_aws::ec2::Ec2NodeClass::from_karpenter(&name, &spec, version));
                let status = object.data["status"].clone();
                let result = class.map(|class| {
                    classes.insert(name.clone(), class);
                });
                reports.push(ClassReport { karpenter: true, name, status, result, resolution: None });
            }
        }
        Err(e) if absent(&e) => {}
        Err(e) => return Err(e).context("list EC2NodeClasses (karpenter.k8s.aws/v1)"),
    }
    let own: kube::Api<EC2NodeClass> = kube::Api::all(client.clone());
    match own.list(&Default::default()).await {
        Ok(list) => {
            for object in list {
                let name = object.metadata.name.clone().unwrap_or_default();
                let status = object.status.as_ref().and_then(|s| serde_json::to_value(s).ok()).unwrap_or_default();
                let result = node_class(&object.spec, &name).map(|class| {
                    // nodewright's own wins a name both kinds have.
                    reports.retain(|r: &ClassReport| r.name != name);
                    classes.insert(name.clone(), class);
                });
                reports.push(ClassReport { karpenter: false, name, status, result: result.map_err(|e| e.to_string()), resolution: None });
            }
        }
        Err(e) if absent(&e) => {}
        Err(e) => return Err(e).context("list EC2NodeClasses (nodewright.io/v1alpha1)"),
    }
    Ok((classes, reports))
}

/// Each node class's status, written where it changed: for a class
/// nodewright can use, the subnets, security groups, AMIs and instance
/// profile it resolves to, a condition for each (`SubnetsReady`, …, False
/// with why) and `Ready` once all hold; for one it cannot, `Ready` False
/// (`Unsupported`) naming the field. Returns the mistakes (unusable
/// classes, and what did not resolve).
pub(super) async fn write_class_status(client: &kube::Client, reports: &[ClassReport]) -> Result<Vec<String>, String> {
    use kube::api::{Patch, PatchParams};
    let mut mistakes = Vec::new();
    for report in reports {
        let (wanted, fields) = class_status(report);
        if let Some((_, _, _, why)) = wanted.iter().find(|c| c.0 == "Ready" && !c.1) {
            mistakes.push(if report.result.is_err() { why.clone() } else { format!("EC2NodeClass {}: {why}", report.name) });
        }
        let current = report.status["conditions"].as_array().cloned().unwrap_or_default();
        let now = chrono::Utc::now().to_rfc3339();
        let mut changed = fields.iter().any(|(k, v)| report.status.get(k) != Some(v));
        let conditions: Vec<serde_json::Value> = wanted
            .iter()
            .map(|(type_, ok, reason, message)| {
                let status = if *ok { "True" } else { "False" };
                let same = current.iter().find(|c| c["type"] == *type_ && c["status"] == status && c["reason"] == reason.as_str() && c["message"] == message.as_str());
                match same {
                    Some(kept) => kept.clone(),
                    None => {
                        changed = true;
                        serde_json::json!({ "type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now })
                    }
                }
            })
            .collect();
        changed |= current.len() != conditions.len();
        if !changed {
            continue;
        }
        let mut status = fields;
        status.insert("conditions".into(), serde_json::Value::Array(conditions));
        let patch = serde_json::json!({ "status": status });
        let written = if report.karpenter {
            let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(client.clone(), &karpenter_node_class());
            api.patch_status(&report.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
        } else {
            let api: kube::Api<EC2NodeClass> = kube::Api::all(client.clone());
            api.patch_status(&report.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
        };
        written.map_err(|e| format!("EC2NodeClass {} status: {e}", report.name))?;
    }
    Ok(mistakes)
}

/// What each usable class resolves to in EC2, on its report.
pub(super) async fn resolve_classes(
    cloud: &nodewright_aws::ec2::Ec2Cloud,
    classes: &std::collections::BTreeMap<String, nodewright_aws::ec2::Ec2NodeClass>,
    reports: &mut [ClassReport],
) {
    for report in reports.iter_mut().filter(|r| r.result.is_ok()) {
        if let Some(class) = classes.get(&report.name) {
            report.resolution = Some(cloud.resolve(class).await);
        }
    }
}

/// Karpenter's `EC2NodeClass` resource.
fn karpenter_node_class() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "karpenter.k8s.aws".into(),
        version: "v1".into(),
        api_version: "karpenter.k8s.aws/v1".into(),
        kind: "EC2NodeClass".into(),
        plural: "ec2nodeclasses".into(),
    }
}

fn node_class(spec: &nodewright_kube::crd::EC2NodeClassSpec, name: &str) -> anyhow::Result<nodewright_aws::ec2::Ec2NodeClass> {
    use nodewright_aws::nodeclass::{AmiFamily, AmiSource, SelectorTerm};
    let ami = match (&spec.ami.id, &spec.ami.ssm_parameter) {
        (Some(id), _) => AmiSource::Id(id.clone()),
        (None, Some(p)) => AmiSource::SsmParameter(p.clone()),
        (None, None) => anyhow::bail!("EC2NodeClass {name}: spec.ami: set id or ssmParameter"),
    };
    let term = |tags: &std::collections::BTreeMap<String, String>| vec![SelectorTerm { tags: tags.clone(), ..Default::default() }];
    Ok(nodewright_aws::ec2::Ec2NodeClass {
        subnets: term(&spec.subnet_selector_tags),
        security_groups: term(&spec.security_group_selector_tags),
        ami: Some(ami),
        // This node class's user data is used as given.
        family: AmiFamily::Custom,
        root_volume_gib: spec.root_volume_gib,
        instance_profile: spec.instance_profile.clone(),
        name: name.into(),
        user_data: spec.user_data.clone(),
        tags: spec.tags.clone(),
        ..Default::default()
    })
}

/// moto's server, for the tests that resolve node classes in EC2.
#[cfg(test)]
#[path = "../../../nodewright-aws/tests/moto/mod.rs"]
mod test_moto;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cli::test_apiserver as apiserver;

    /// Karpenter's EC2NodeClass `name`: the fields of `base`, and those of
    /// `more` over them.
    fn karpenter_class(name: &str, base: &serde_json::Value, more: serde_json::Value) -> serde_json::Value {
        let mut spec = base.clone();
        spec.as_object_mut().unwrap().extend(more.as_object().unwrap().clone());
        serde_json::json!({ "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": { "name": name }, "spec": spec })
    }

    /// A Karpenter EC2NodeClass selecting the subnets and groups
    /// `Moto::ec2_cloud` tags, on the AL2023 alias, made for role `Nodes`.
    fn tagged_class(name: &str) -> serde_json::Value {
        let tagged = serde_json::json!([{ "tags": { "nodewright.io/discovery": "test" } }]);
        let base = serde_json::json!({ "amiSelectorTerms": [{ "alias": "al2023@latest" }], "subnetSelectorTerms": tagged, "securityGroupSelectorTerms": tagged });
        karpenter_class(name, &base, serde_json::json!({ "role": "Nodes" }))
    }

    /// A class's status lists what it resolves to in EC2 (moto) as
    /// Karpenter's does, a condition per part, and Ready once all hold; a
    /// part that does not resolve says why; nothing unchanged is rewritten.
    #[tokio::test]
    async fn a_node_class_status_lists_what_it_resolves_to_and_says_what_does_not() {
        const AL2023: &str = "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id";
        let moto = super::test_moto::Moto::start_with_public_parameters(&[(AL2023, "@amazon-x86_64")]);
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        moto.iam().create_role().role_name("Nodes").assume_role_policy_document(trust).send().await.unwrap();
        let cloud = moto.ec2_cloud(moto.ec2(), None).await.with_ssm(moto.ssm()).with_iam(moto.iam(), "us-east-1");
        let ami = moto.ssm().get_parameter().name(AL2023).send().await.unwrap().parameter().unwrap().value().unwrap().to_string();
        let (client, server) = apiserver::ApiServer::start();
        server.put(tagged_class("ready"));
        let mut lost = tagged_class("no-subnets");
        lost["spec"]["subnetSelectorTerms"] = serde_json::json!([{ "tags": { "team": "nobody" } }]);
        server.put(lost);
        let (classes, mut reports) = node_classes(&client, "1.31").await.unwrap();
        resolve_classes(&cloud, &classes, &mut reports).await;
        let mistakes = write_class_status(&client, &reports).await.unwrap();
        let collection = "/apis/karpenter.k8s.aws/v1/ec2nodeclasses";
        let status = |name: &str| server.get_in(collection, name).unwrap()["status"].clone();
        let ready = status("ready");
        let mut zones: Vec<&str> = ready["subnets"].as_array().unwrap().iter().map(|s| s["zone"].as_str().unwrap()).collect();
        zones.sort_unstable();
        assert_eq!(zones, ["us-east-1a", "us-east-1b"]);
        assert_eq!(ready["securityGroups"][0]["name"], "nodes");
        // The alias has an x86_64 image here, no arm64 one: one AMI, Ready all the same.
        assert_eq!(ready["amis"], serde_json::json!([{ "id": ami, "requirements": [{ "key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"] }] }]));
        assert!(ready["instanceProfile"].as_str().unwrap().starts_with("test-cluster_"), "{ready}");
        let conditions = |s: &serde_json::Value| -> Vec<(String, String)> {
            s["conditions"].as_array().unwrap().iter().map(|c| (c["type"].as_str().unwrap().into(), c["status"].as_str().unwrap().into())).collect()
        };
        let all_true = ["SubnetsReady", "SecurityGroupsReady", "AMIsReady", "InstanceProfileReady", "CapacityReservationsReady", "Ready"].map(|t| (t.to_string(), "True".to_string()));
        assert_eq!(conditions(&ready), all_true.to_vec());
        let lost = status("no-subnets");
        let subnets = lost["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "SubnetsReady").unwrap().clone();
        assert_eq!((subnets["status"].as_str(), subnets["reason"].as_str()), (Some("False"), Some("SubnetsNotReady")));
        assert!(subnets["message"].as_str().unwrap().starts_with("no subnet matches the node class's subnetSelectorTerms"), "{subnets}");
        assert_eq!(conditions(&lost).last(), Some(&("Ready".to_string(), "False".to_string())));
        assert_eq!(mistakes.len(), 1);
        assert!(mistakes[0].starts_with("EC2NodeClass no-subnets: SubnetsReady: no subnet matches"), "{mistakes:?}");
        // Resolved again (from the cache of this drift generation), nothing changed: nothing rewritten.
        let version = |name: &str| server.get_in(collection, name).unwrap()["metadata"]["resourceVersion"].clone();
        let before = (version("ready"), version("no-subnets"));
        let (classes, mut reports) = node_classes(&client, "1.31").await.unwrap();
        resolve_classes(&cloud, &classes, &mut reports).await;
        write_class_status(&client, &reports).await.unwrap();
        assert_eq!((version("ready"), version("no-subnets")), before);
        assert_eq!(server.unexpected(), Vec::<String>::new());
    }

    /// Karpenter's EC2NodeClass, read unchanged from its own API group when
    /// nodewright has none by that name; nodewright's own wins; what cannot
    /// be launched yet, or is missing, is named.
    #[tokio::test]
    async fn the_node_class_is_nodewrights_or_karpenters_by_name() {
        let (client, server) = apiserver::ApiServer::start();
        let base = serde_json::json!({
            "amiSelectorTerms": [{ "alias": "al2023@latest" }],
            "subnetSelectorTerms": [{ "tags": { "karpenter.sh/discovery": "my-cluster" } }],
            "securityGroupSelectorTerms": [{ "tags": { "karpenter.sh/discovery": "my-cluster" } }],
            "kubelet": { "maxPods": 42 },
        });
        let karpenter = |name: &str, access: serde_json::Value| karpenter_class(name, &base, access);
        server.put(karpenter("default", serde_json::json!({ "instanceProfile": "KarpenterNodeInstanceProfile" })));
        server.put(karpenter("by-role", serde_json::json!({ "role": "KarpenterNodeRole-my-cluster" })));
        server.put(serde_json::json!({
            "apiVersion": "nodewright.io/v1alpha1", "kind": "EC2NodeClass", "metadata": { "name": "own" },
            "spec": { "subnetSelectorTags": { "team": "a" }, "securityGroupSelectorTags": { "team": "a" }, "ami": { "id": "ami-0123" } }
        }));
        let class = load_node_class(&client, "default", "1.31").await.unwrap();
        assert_eq!(class.family, nodewright_aws::nodeclass::AmiFamily::Al2023);
        assert_eq!(class.kubelet.max_pods, Some(42));
        assert_eq!(class.kubernetes_version, "1.31");
        assert_eq!(class.instance_profile.as_deref(), Some("KarpenterNodeInstanceProfile"));
        let own = load_node_class(&client, "own", "1.31").await.unwrap();
        assert_eq!(own.ami, Some(nodewright_aws::nodeclass::AmiSource::Id("ami-0123".into())));
        // A role: an instance profile is made for it at launch.
        let by_role = load_node_class(&client, "by-role", "1.31").await.unwrap();
        assert_eq!((by_role.role.as_deref(), by_role.instance_profile.as_deref(), by_role.name.as_str()), (Some("KarpenterNodeRole-my-cluster"), None, "by-role"));
        server.put(karpenter("windows", serde_json::json!({ "role": "Nodes", "amiSelectorTerms": [{ "alias": "windows2022@latest" }] })));
        assert_eq!(
            load_node_class(&client, "windows", "1.31").await.unwrap_err().to_string(),
            "EC2NodeClass windows: spec.amiSelectorTerms[0].alias: `windows2022` is not al2023, al2 or bottlerocket"
        );
        assert_eq!(
            load_node_class(&client, "missing", "1.31").await.unwrap_err().to_string(),
            "EC2NodeClass missing: neither nodewright.io/v1alpha1 nor karpenter.k8s.aws/v1 has one by that name"
        );
        assert_eq!(server.unexpected(), Vec::<String>::new());
    }

    /// Every node class, of both kinds, by name; the unusable ones named.
    #[tokio::test]
    async fn node_classes_of_both_kinds_are_read_and_the_unusable_named() {
        let (client, server) = apiserver::ApiServer::start();
        let base = serde_json::json!({
            "amiSelectorTerms": [{ "alias": "bottlerocket@latest" }],
            "subnetSelectorTerms": [{ "id": "subnet-1" }],
            "securityGroupSelectorTerms": [{ "name": "nodes" }],
        });
        let karpenter = |name: &str, access: serde_json::Value| karpenter_class(name, &base, access);
        server.put(karpenter("gpu", serde_json::json!({ "instanceProfile": "GpuNodes" })));
        server.put(karpenter("by-role", serde_json::json!({ "role": "KarpenterNodeRole" })));
        server.put(karpenter("windows", serde_json::json!({ "role": "KarpenterNodeRole", "amiFamily": "Windows2022", "amiSelectorTerms": [{ "id": "ami-0123" }] })));
        server.put(serde_json::json!({
            "apiVersion": "nodewright.io/v1alpha1", "kind": "EC2NodeClass", "metadata": { "name": "default" },
            "spec": { "subnetSelectorTags": { "team": "a" }, "securityGroupSelectorTags": { "team": "a" }, "ami": { "id": "ami-0123" } }
        }));
        let (classes, reports) = node_classes(&client, "1.31").await.unwrap();
        let mistakes = write_class_status(&client, &reports).await.unwrap();
        assert_eq!(classes.keys().collect::<Vec<_>>(), ["by-role", "default", "gpu"]);
        assert_eq!(classes["gpu"].family, nodewright_aws::nodeclass::AmiFamily::Bottlerocket);
        assert_eq!(classes["gpu"].instance_profile.as_deref(), Some("GpuNodes"));
        assert_eq!(classes["by-role"].role.as_deref(), Some("KarpenterNodeRole"));
        let why = "EC2NodeClass windows: spec.amiFamily: `Windows2022`: Windows nodes are not supported (the catalog and user data are Linux)";
        assert_eq!(mistakes, [why]);
        // Each class says so in its Ready condition, of either kind.
        let ready = |collection: &str, name: &str| {
            let object = server.get_in(collection, name).unwrap();
            (object["status"]["conditions"][0]["status"].as_str().unwrap().to_string(), object["status"]["conditions"][0]["message"].as_str().unwrap().to_string())
        };
        let karpenter = "/apis/karpenter.k8s.aws/v1/ec2nodeclasses";
        assert_eq!(ready(karpenter, "windows"), ("False".to_string(), why.to_string()));
        assert_eq!(ready(karpenter, "by-role"), ("True".to_string(), String::new()));
        assert_eq!(ready(karpenter, "gpu"), ("True".to_string(), String::new()));
        assert_eq!(ready("/apis/nodewright.io/v1alpha1/ec2nodeclasses", "default"), ("True".to_string(), String::new()));
        // Unchanged, nothing is written again.
        let version = |name: &str| server.get_in(karpenter, name).unwrap()["metadata"]["resourceVersion"].clone();
        let before = (version("windows"), version("gpu"));
        let (_, reports) = node_classes(&client, "1.31").await.unwrap();
        write_class_status(&client, &reports).await.unwrap();
        assert_eq!((version("windows"), version("gpu")), before, "no status rewritten");
        assert_eq!(server.unexpected(), Vec::<String>::new());
    }
}
