//! The Helm chart (`charts/nodewright`), rendered by helm (installed by
//! `scripts/install-helm`): it lints, its render with the example values is
//! the committed `examples/deploy/nodewright.yaml`, its settings do what
//! the values say, and `nodewright run` accepts the configuration and the
//! arguments it renders.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn helm() -> PathBuf {
    let path = std::env::var_os("NODEWRIGHT_HELM").map(PathBuf::from).unwrap_or_else(|| root().join("target/tools/helm"));
    assert!(path.exists(), "{} is missing: run scripts/install-helm (scripts/test does)", path.display());
    path
}

/// `helm ARGS` in the repository root: (success, stdout, stderr).
fn run_helm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm()).args(args).current_dir(root()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The chart rendered as release `nodewright` in namespace `nodewright` with `extra` arguments.
fn render(extra: &[&str]) -> Vec<serde_yaml_ng::Value> {
    let mut args = vec!["template", "nodewright", "charts/nodewright", "--namespace", "nodewright"];
    args.extend_from_slice(extra);
    let (ok, out, err) = run_helm(&args);
    assert!(ok, "helm {args:?}: {err}");
    documents(&out)
}

fn documents(text: &str) -> Vec<serde_yaml_ng::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml_ng::Value| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [serde_yaml_ng::Value], kind: &str) -> Option<&'a serde_yaml_ng::Value> {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind))
}

#[test]
fn the_chart_lints_and_renders_the_committed_manifests() {
    let (ok, out, err) = run_helm(&["lint", "charts/nodewright", "--set", "controller.clusterName=c"]);
    assert!(ok, "{out}{err}");
    let (ok, rendered, err) =
        run_helm(&["template", "nodewright", "charts/nodewright", "--namespace", "nodewright", "-f", "examples/deploy/values.yaml"]);
    assert!(ok, "{err}");
    let file = root().join("examples/deploy/nodewright.yaml");
    // `NODEWRIGHT_BLESS=1` rewrites the file (then review the diff).
    if std::env::var_os("NODEWRIGHT_BLESS").is_some() {
        std::fs::write(&file, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&file).unwrap();
    assert!(committed == rendered, "{} is stale: NODEWRIGHT_BLESS=1 scripts/test regenerates it", file.display());
    let docs = documents(&rendered);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["PodDisruptionBudget", "ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment"]
    );
    let deployment = kind(&docs, "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2), "one leader, one standby");
    assert_eq!(kind(&docs, "PodDisruptionBudget").unwrap()["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert_eq!(
        kind(&docs, "ServiceAccount").unwrap()["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str(),
        Some("arn:aws:iam::123456789012:role/nodewright-controller")
    );
    assert!(kind(&docs, "ServiceMonitor").is_none(), "off by default");
}

#[test]
fn values_switch_the_service_monitor_pod_identity_and_replicas() {
    let docs = render(&["--set", "controller.clusterName=c", "--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prom"]);
    let monitor = kind(&docs, "ServiceMonitor").expect("a ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"].as_str(), Some("prom"));
    assert_eq!(monitor["spec"]["endpoints"][0]["port"].as_str(), Some("http-metrics"));
    let service = kind(&docs, "Service").unwrap();
    assert_eq!(service["spec"]["ports"][0]["name"].as_str(), Some("http-metrics"));
    // EKS Pod Identity: the association is on the AWS side; no annotation.
    let docs = render(&["--set", "controller.clusterName=c", "--set", "podIdentity.enabled=true"]);
    assert!(kind(&docs, "ServiceAccount").unwrap()["metadata"]["annotations"].is_null());
    let docs = render(&["--set", "controller.clusterName=c", "--set", "replicas=3", "--set", "podDisruptionBudget.enabled=false"]);
    assert_eq!(kind(&docs, "Deployment").unwrap()["spec"]["replicas"].as_u64(), Some(3));
    assert!(kind(&docs, "PodDisruptionBudget").is_none());
    // Mistakes are refused by name.
    let (ok, _, err) = run_helm(&["template", "nodewright", "charts/nodewright"]);
    assert!(!ok && err.contains("controller.clusterName is required"), "{err}");
    let (ok, _, err) =
        run_helm(&["template", "nodewright", "charts/nodewright", "--set", "controller.clusterName=c", "--set", "irsa.roleArn=arn:x", "--set", "podIdentity.enabled=true"]);
    assert!(!ok && err.contains("set irsa.roleArn or podIdentity.enabled, not both"), "{err}");
}

#[cfg(feature = "controller")]
#[test]
fn nodewright_run_accepts_the_rendered_configuration_and_arguments() {
    let docs = render(&["-f", "examples/deploy/values.yaml", "--set", "controller.intervalSeconds=20"]);
    let config = kind(&docs, "ConfigMap").unwrap()["data"]["config.yaml"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &config).unwrap();
    let container = &kind(&docs, "Deployment").unwrap()["spec"]["template"]["spec"]["containers"][0];
    // The container's arguments, with the mounted paths and the port moved
    // to this test's own.
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| match a.as_str() {
            "/etc/nodewright/config.yaml" => path.display().to_string(),
            "/var/cache/nodewright" => dir.path().join("cache").display().to_string(),
            a if a.starts_with("0.0.0.0:") => "127.0.0.1:0".into(),
            _ => a,
        })
        .collect();
    assert_eq!(args[0], "run");
    // Without a cluster to talk to, `run` gets as far as the Kubernetes
    // client: the configuration and every flag were accepted.
    let out = Command::new(env!("CARGO_BIN_EXE_nodewright"))
        .args(&args)
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Kubernetes client (in-cluster or KUBECONFIG)"), "{stderr}");
    // Commitments given as values are mounted beside the configuration and
    // read at start: a mistake in them stops `run`, naming the field.
    let docs = render(&[
        "-f", "examples/deploy/values.yaml",
        "--set-json", r#"commitments={"savingsPlans":[{"hourlyCommitment":1.5,"discount":1.5}]}"#,
    ]);
    let data = &kind(&docs, "ConfigMap").unwrap()["data"];
    let with_commitments = data["config.yaml"].as_str().unwrap().replace("/etc/nodewright/commitments.yaml", &dir.path().join("commitments.yaml").display().to_string());
    assert_ne!(with_commitments, data["config.yaml"].as_str().unwrap(), "the configuration names the mounted file");
    std::fs::write(dir.path().join("commitments.yaml"), data["commitments.yaml"].as_str().unwrap()).unwrap();
    std::fs::write(&path, &with_commitments).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodewright")).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("savingsPlans[0].discount: 1.5 is not a discount"), "{stderr}");
    // A value out of range is named by the controller, not by the chart.
    std::fs::write(&path, config.replace("intervalSeconds: 20", "intervalSeconds: 0")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodewright")).args(&args).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}: intervalSeconds: must be at least 1", path.display())));
}
