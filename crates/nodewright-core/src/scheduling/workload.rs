//! Synthetic workloads for benchmarks, shaped like Karpenter's scheduling
//! benchmark: "diverse" pods in equal fifths — generic, zone topology
//! spread, hostname topology spread, zone pod affinity, hostname pod
//! anti-affinity — with seeded sizes.

use std::collections::HashMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::model::{LabelSelector, Pod, PodSpec, TopologyKey};

const CPU_MILLIS: [u32; 5] = [100, 250, 500, 1000, 2000];
const MEMORY_MIB: [u64; 6] = [128, 256, 512, 1024, 2048, 4096];

/// `n` diverse pods; pods of one kind and size share a spec, as the pods of
/// one Deployment do.
pub fn diverse_pods(n: usize, seed: u64) -> Vec<Pod> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut specs: HashMap<(usize, usize, usize), Arc<PodSpec>> = HashMap::new();
    (0..n)
        .map(|i| {
            let kind = i % 5;
            let cpu = rng.random_range(0..CPU_MILLIS.len());
            let memory = rng.random_range(0..MEMORY_MIB.len());
            let spec = specs.entry((kind, cpu, memory)).or_insert_with(|| Arc::new(spec_of(kind, CPU_MILLIS[cpu], MEMORY_MIB[memory] << 20)));
            Pod::new(format!("{}-{i}", KINDS[kind]), spec.clone())
        })
        .collect()
}

const KINDS: [&str; 5] = ["generic", "zone-spread", "host-spread", "zone-affinity", "host-anti-affinity"];

fn spec_of(kind: usize, cpu_millis: u32, memory_bytes: u64) -> PodSpec {
    let base = PodSpec::requesting(cpu_millis, memory_bytes).label("app", KINDS[kind]);
    let own = LabelSelector::label("app", KINDS[kind]);
    match kind {
        1 => base.spread(TopologyKey::Zone, 1, true, own),
        2 => base.spread(TopologyKey::Hostname, 1, true, own),
        3 => base.affinity(TopologyKey::Zone, own),
        4 => base.anti_affinity(TopologyKey::Hostname, own),
        _ => base,
    }
}
