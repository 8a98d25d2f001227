//! Prometheus metrics of `nodewright run`, served on `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SlotLabels {
    slot: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StepLabels {
    step: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StepNameLabels {
    step: String,
}

/// Every metric the controller exports.
pub(crate) struct Metrics {
    registry: Registry,
    decisions: Family<SlotLabels, Counter>,
    plugin_failures: Family<SlotLabels, Counter>,
    fallbacks: Family<SlotLabels, Counter>,
    swaps: Family<SlotLabels, Counter>,
    plugin_latency: Family<PluginLabels, Histogram>,
    launches: Counter,
    launch_failures: Counter,
    terminations: Family<KindLabels, Counter>,
    rejections: Family<KindLabels, Counter>,
    interruptions: Family<KindLabels, Counter>,
    step_failures: Family<StepLabels, Counter>,
    step_success: Family<StepNameLabels, Gauge>,
    pending_pods: Gauge,
    nodes: Gauge,
    cost_per_hour: Gauge<f64, AtomicU64>,
    leader: Gauge,
    /// Last totals seen per (metric, label), so counters advance by deltas.
    seen: Mutex<BTreeMap<(String, String), u64>>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("nodewright");
        let decisions = Family::<SlotLabels, Counter>::default();
        let plugin_failures = Family::<SlotLabels, Counter>::default();
        let fallbacks = Family::<SlotLabels, Counter>::default();
        let swaps = Family::<SlotLabels, Counter>::default();
        let plugin_latency = Family::<PluginLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5])
        });
        let launches = Counter::default();
        let launch_failures = Counter::default();
        let terminations = Family::<KindLabels, Counter>::default();
        let rejections = Family::<KindLabels, Counter>::default();
        let interruptions = Family::<KindLabels, Counter>::default();
        let step_failures = Family::<StepLabels, Counter>::default();
        let step_success = Family::<StepNameLabels, Gauge>::default();
        let pending_pods = Gauge::default();
        let nodes = Gauge::default();
        let cost_per_hour = Gauge::<f64, AtomicU64>::default();
        let leader = Gauge::default();
        registry.register("decisions", "Decisions asked of a policy slot", decisions.clone());
        registry.register("plugin_failures", "Plugin calls that failed (answered by the built-in policy)", plugin_failures.clone());
        registry.register("fallbacks", "Decisions made by the built-in policy after a plugin failure", fallbacks.clone());
        registry.register("swaps", "Versions swapped into a slot", swaps.clone());
        registry.register("plugin_call_seconds", "Wall time of one plugin call", plugin_latency.clone());
        registry.register("launches", "Instances launched", launches.clone());
        registry.register("launch_failures", "Launches that failed", launch_failures.clone());
        registry.register("terminations", "Nodes terminated, by reason", terminations.clone());
        registry.register("disruptions_rejected", "Disruption actions rejected, by the validation rule that rejected them", rejections.clone());
        registry.register("interruptions", "Interruption messages handled, by kind and outcome", interruptions.clone());
        registry.register(
            "controller_step_failures",
            "Controller steps that returned an error or panicked (caught; the controller kept running)",
            step_failures.clone(),
        );
        registry.register(
            "controller_last_success_timestamp_seconds",
            "When each controller step last succeeded (Unix seconds)",
            step_success.clone(),
        );
        registry.register("pending_pods", "Pods the scheduler could not place", pending_pods.clone());
        registry.register("nodes", "Nodes nodewright manages", nodes.clone());
        registry.register("cluster_cost_per_hour_dollars", "Price of the managed nodes, dollars per hour", cost_per_hour.clone());
        registry.register("leader", "1 when this replica holds the lease", leader.clone());
        Metrics {
            registry,
            decisions,
            plugin_failures,
            fallbacks,
            swaps,
            plugin_latency,
            launches,
            launch_failures,
            terminations,
            rejections,
            interruptions,
            step_failures,
            step_success,
            pending_pods,
            nodes,
            cost_per_hour,
            leader,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Advance `counter` to the running total `total` (kept by a controller).
    fn advance(&self, metric: &str, label: &str, counter: &Counter, total: u64) {
        let mut seen = self.seen.lock().expect("metrics lock");
        let last = seen.entry((metric.into(), label.into())).or_insert(0);
        if total > *last {
            counter.inc_by(total - *last);
            *last = total;
        }
    }

    pub(crate) fn observe_call(&self, plugin: &str, seconds: f64) {
        self.plugin_latency.get_or_create(&PluginLabels { plugin: plugin.into() }).observe(seconds);
    }

    pub(crate) fn slots(&self, registry: &nodewright_core::policy::PolicyRegistry) {
        for slot in registry.slots() {
            let stats = slot.stats();
            let labels = SlotLabels { slot: stats.name.clone() };
            self.advance("decisions", &stats.name, &self.decisions.get_or_create(&labels), stats.calls);
            self.advance("failures", &stats.name, &self.plugin_failures.get_or_create(&labels), stats.failures.values().sum());
            self.advance("fallbacks", &stats.name, &self.fallbacks.get_or_create(&labels), stats.fallbacks);
            self.advance("swaps", &stats.name, &self.swaps.get_or_create(&labels), stats.swaps);
        }
    }

    /// Count a supervised step that failed (`kind`: error or panic).
    pub(crate) fn step_succeeded(&self, step: &str) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.step_success.get_or_create(&StepNameLabels { step: step.into() }).set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    pub(crate) fn step_failed(&self, step: &str, kind: &str) {
        self.step_failures.get_or_create(&StepLabels { step: step.into(), kind: kind.into() }).inc();
    }

    pub(crate) fn launched(&self, ok: usize, failed: usize) {
        self.launches.inc_by(ok as u64);
        self.launch_failures.inc_by(failed as u64);
    }

    pub(crate) fn terminations(&self, counts: &nodewright_core::disruption::DisruptionCounts) {
        for (reason, total) in &counts.nodes {
            let kind = reason.budget_name().to_string();
            self.advance("terminations", &kind, &self.terminations.get_or_create(&KindLabels { kind: kind.clone() }), *total);
        }
        for (rule, total) in &counts.rejected_by_rule {
            let rule = rule.to_string();
            self.advance("disruptions_rejected", &rule, &self.rejections.get_or_create(&KindLabels { kind: rule.clone() }), *total);
        }
    }

    pub(crate) fn interruptions(&self, counts: &BTreeMap<(String, String), u64>) {
        for ((kind, outcome), total) in counts {
            let label = format!("{kind}/{outcome}");
            self.advance("interruptions", &label, &self.interruptions.get_or_create(&KindLabels { kind: label.clone() }), *total);
        }
    }

    pub(crate) fn cluster(&self, pending: usize, nodes: usize, dollars_per_hour: f64) {
        self.pending_pods.set(pending as i64);
        self.nodes.set(nodes as i64);
        self.cost_per_hour.set(dollars_per_hour);
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_advance_by_the_difference_of_running_totals() {
        let m = Metrics::new();
        m.launched(2, 1);
        let mut counts = nodewright_core::disruption::DisruptionCounts::default();
        counts.nodes.insert(nodewright_core::disruption::Reason::Empty, 3);
        m.terminations(&counts);
        m.terminations(&counts);
        counts.nodes.insert(nodewright_core::disruption::Reason::Empty, 5);
        counts.rejected_by_rule.insert("pdb", 2);
        m.terminations(&counts);
        m.observe_call("cheapest", 0.000_02);
        m.cluster(4, 10, 1.5);
        let text = m.encode();
        assert!(text.contains("nodewright_launches_total 2"), "{text}");
        assert!(text.contains("nodewright_terminations_total{kind=\"Empty\"} 5"), "{text}");
        assert!(text.contains("nodewright_disruptions_rejected_total{kind=\"pdb\"} 2"), "{text}");
        assert!(text.contains("nodewright_plugin_call_seconds_count{plugin=\"cheapest\"} 1"), "{text}");
        assert!(text.contains("nodewright_pending_pods 4"), "{text}");
        assert!(text.contains("nodewright_cluster_cost_per_hour_dollars 1.5"), "{text}");
    }
}
