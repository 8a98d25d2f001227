//! `nodewright top` in a real terminal (tmux): replaying a simulation with
//! its time cursor, and watching a cluster (the stateful API server, served
//! on a loopback port, through a kubeconfig).

#[path = "../../nodewright-kube/tests/support/apiserver.rs"]
mod apiserver;

use std::process::Command;
use std::time::{Duration, Instant};

fn nodewright(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nodewright")).args(args).output().unwrap();
    assert!(out.status.success(), "nodewright {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tmux session of its own (a private server socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str, env: &[(&str, &str)]) -> Tmux {
        let socket = format!("nodewright-test-{name}-{}", std::process::id());
        let mut tmux = Command::new("tmux");
        tmux.args(["-L", &socket, "new-session", "-d", "-x", "150", "-y", "40"]);
        for (k, v) in env {
            tmux.args(["-e", &format!("{k}={v}")]);
        }
        let status = tmux.arg(command).status().expect("tmux is installed");
        assert!(status.success());
        Tmux { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket, "capture-pane", "-p"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen once it shows `text` (within 20 s).
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(Instant::now() < deadline, "the screen never showed {text:?}:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn keys(&self, keys: &[&str]) {
        assert!(Command::new("tmux").args(["-L", &self.socket, "send-keys"]).args(keys).status().unwrap().success());
    }

    fn alive(&self) -> bool {
        Command::new("tmux").args(["-L", &self.socket, "has-session"]).output().is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

#[test]
fn top_replays_a_simulation_with_a_time_cursor_in_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    nodewright(&["trace", "generate", "diurnal-web", "--scale", "0.2", "--out", trace.to_str().unwrap()]);
    let out = dir.path().join("report");
    nodewright(&["simulate", "--trace", trace.to_str().unwrap(), "--policy", "cheapest", "--out", out.to_str().unwrap()]);
    let command = format!("{} top --report {} --at 5", env!("CARGO_BIN_EXE_nodewright"), out.display());
    let tmux = Tmux::start("replay", &command, &[]);
    let screen = tmux.wait_for("hour 5 of 48");
    assert!(screen.contains("nodewright top: replay of"), "{screen}");
    assert!(screen.contains("(policy cheapest)"));
    assert!(screen.contains("NodePool default: selection cheapest, consolidation karpenter-like"), "{screen}");
    assert!(screen.contains("NODE") && screen.contains("$/H") && screen.contains("CPU") && screen.contains("MEMORY"), "{screen}");
    assert!(screen.contains("/month"), "{screen}");
    // Node rows with their bars.
    assert!(screen.lines().any(|l| l.starts_with("default-") && l.contains('%')), "{screen}");
    // The cursor moves an hour at a time, and q quits.
    tmux.keys(&["Right"]);
    tmux.wait_for("hour 6 of 48");
    tmux.keys(&["Left", "Left"]);
    tmux.wait_for("hour 4 of 48");
    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.alive() {
        assert!(Instant::now() < deadline, "q did not quit");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same frame, printed once.
    let once = nodewright(&["top", "--report", out.to_str().unwrap(), "--at", "5", "--once"]);
    assert!(once.contains("hour 5 of 48"), "{once}");
}

#[test]
fn top_watches_a_cluster_through_a_kubeconfig_in_a_terminal() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_client, server) = runtime.block_on(async { apiserver::ApiServer::start() });
    server.put(serde_json::json!({
        "apiVersion": "nodewright.io/v1alpha1", "kind": "NodePool", "metadata": { "name": "default" },
        "spec": { "policy": { "selection": { "plugin": "spot-savvy" } } }
    }));
    server.put(serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": { "name": "ip-10-0-1-5.ec2.internal", "labels": {
            "node.kubernetes.io/instance-type": "m5.large", "topology.kubernetes.io/zone": "us-east-1a",
            "karpenter.sh/capacity-type": "on-demand", "karpenter.sh/nodepool": "default" } },
        "status": { "allocatable": { "cpu": "1930m", "memory": "7Gi", "pods": "29" } }
    }));
    server.put(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web-1", "namespace": "shop" },
        "spec": { "nodeName": "ip-10-0-1-5.ec2.internal", "containers": [{ "name": "web", "resources": { "requests": { "cpu": "965m", "memory": "1Gi" } } }] },
        "status": { "phase": "Running" }
    }));
    server.put(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web-2", "namespace": "shop" },
        "spec": { "containers": [{ "name": "web", "resources": { "requests": { "cpu": "1", "memory": "1Gi" } } }] },
        "status": { "phase": "Pending" }
    }));
    // Served on a loopback port, for a kubeconfig to name.
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = server.router();
    runtime.spawn(async move { axum::serve(listener, router).await });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: t\n  user: {{}}\n\
             contexts:\n- name: t\n  context:\n    cluster: t\n    user: t\ncurrent-context: t\n"
        ),
    )
    .unwrap();
    // Printed once (no terminal), then in tmux.
    let once = Command::new(env!("CARGO_BIN_EXE_nodewright")).args(["top", "--once"]).env("KUBECONFIG", &kubeconfig).output().unwrap();
    let printed = String::from_utf8_lossy(&once.stdout);
    assert!(once.status.success() && printed.contains("ip-10-0-1-5.ec2.internal"), "{printed}{}", String::from_utf8_lossy(&once.stderr));
    let command = format!("{} top --interval 1", env!("CARGO_BIN_EXE_nodewright"));
    let tmux = Tmux::start("live", &command, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    let screen = tmux.wait_for("ip-10-0-1-5.ec2.internal");
    assert!(screen.contains("1 nodes (1 on-demand, 0 spot)"), "{screen}");
    assert!(screen.contains("1 pods pending"), "{screen}");
    assert!(screen.contains("NodePool default: selection spot-savvy, consolidation karpenter-like"), "{screen}");
    let row = screen.lines().find(|l| l.starts_with("ip-10-0-1-5")).unwrap();
    assert!(row.contains("m5.large") && row.contains("on-demand") && row.contains("us-east-1a"), "{row}");
    assert!(row.contains(" 50%"), "965m of 1930m CPU requested: {row}");
    // A new pod shows on the next read.
    server.put(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web-3", "namespace": "shop" },
        "spec": { "containers": [{ "name": "web", "resources": { "requests": { "cpu": "1" } } }] },
        "status": { "phase": "Pending" }
    }));
    tmux.wait_for("2 pods pending");
    tmux.keys(&["q"]);
}
