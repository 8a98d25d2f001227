use std::hash::{Hash, Hasher};

use super::{Arch, CapacityType, InterruptionRate, Offering, Resources};

/// The zones the bundled catalog offers every instance type in.
pub const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

const MIB: u64 = 1 << 20;
/// Root volume size nodes get unless their node class says otherwise.
const ROOT_VOLUME_GIB: u64 = 20;

/// An EC2 instance type and its facts, one row of the bundled catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    /// Name, e.g. `m7g.large`.
    pub name: String,
    /// Family, e.g. `m7g`.
    pub family: String,
    /// Generation, e.g. 7.
    pub generation: u32,
    /// Virtual CPUs.
    pub vcpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// CPU architecture.
    pub arch: Arch,
    /// GPUs.
    pub gpus: u32,
    /// Most pods the VPC CNI can give addresses to.
    pub max_pods: u32,
    /// On-demand list price, US dollars per hour.
    pub on_demand_price: f64,
}

/// A malformed catalog line.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{source_name}:{line}: {field}: {message}")]
pub struct CatalogError {
    /// File or resource the text came from.
    pub source_name: String,
    /// 1-based line number.
    pub line: usize,
    /// Column name.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

const HEADER: [&str; 9] = [
    "instance_type",
    "family",
    "generation",
    "vcpu",
    "memory_mib",
    "arch",
    "gpus",
    "max_pods",
    "od_price_usd_per_hour",
];

/// The instance types bundled with nodewright (us-east-1, see `crates/nodewright-core/data/`).
pub fn bundled_instance_types() -> Vec<InstanceType> {
    parse_instance_types("crates/nodewright-core/data/instance-types.csv", include_str!("../../data/instance-types.csv"))
        .expect("the bundled catalog is checked by the tests")
}

/// Parse a catalog CSV (the format `scripts/gen-catalog.py` writes); `#` lines are comments.
pub fn parse_instance_types(source_name: &str, text: &str) -> Result<Vec<InstanceType>, CatalogError> {
    let error = |line: usize, field: &'static str, message: String| CatalogError {
        source_name: source_name.to_string(),
        line,
        field,
        message,
    };
    let mut rows = text.lines().enumerate().filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty());
    let Some((header_index, header)) = rows.next() else {
        return Err(error(1, "instance_type", "no header line".into()));
    };
    if header.split(',').collect::<Vec<_>>() != HEADER {
        return Err(error(header_index + 1, "instance_type", format!("header must be `{}`", HEADER.join(","))));
    }
    let mut types = Vec::new();
    for (index, line) in rows {
        let n = index + 1;
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != HEADER.len() {
            return Err(error(n, "instance_type", format!("{} columns, expected {}", cells.len(), HEADER.len())));
        }
        fn number<T: std::str::FromStr>(cell: &str) -> Result<T, String> {
            cell.parse().map_err(|_| format!("`{cell}` is not a number"))
        }
        let arch = match cells[5] {
            "amd64" => Arch::Amd64,
            "arm64" => Arch::Arm64,
            other => return Err(error(n, "arch", format!("`{other}` is not amd64 or arm64"))),
        };
        let on_demand_price: f64 = number(cells[8]).map_err(|m| error(n, "od_price_usd_per_hour", m))?;
        if !(on_demand_price.is_finite() && on_demand_price > 0.0) {
            return Err(error(n, "od_price_usd_per_hour", format!("`{}` must be a positive price", cells[8])));
        }
        types.push(InstanceType {
            name: cells[0].to_string(),
            family: cells[1].to_string(),
            generation: number(cells[2]).map_err(|m| error(n, "generation", m))?,
            vcpu: number(cells[3]).map_err(|m| error(n, "vcpu", m))?,
            memory_mib: number(cells[4]).map_err(|m| error(n, "memory_mib", m))?,
            arch,
            gpus: number(cells[6]).map_err(|m| error(n, "gpus", m))?,
            max_pods: number(cells[7]).map_err(|m| error(n, "max_pods", m))?,
            on_demand_price,
        });
    }
    Ok(types)
}

/// The kubelet settings of a node class that change what pods can use
/// (Karpenter's `spec.kubelet`), quantities parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KubeletConfig {
    /// `maxPods`: replaces the instance type's ENI limit.
    pub max_pods: Option<u32>,
    /// `podsPerCore`: at most this many pods per vCPU.
    pub pods_per_core: Option<u32>,
    /// `kubeReserved`: replaces the computed reservation, per resource.
    pub kube_reserved: Reserved,
    /// `systemReserved`: reserved on top.
    pub system_reserved: Reserved,
    /// `evictionHard` `memory.available`: replaces the 100 MiB default.
    pub eviction_memory_bytes: Option<u64>,
}

/// Reserved CPU (millicores), memory and ephemeral storage (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Reserved {
    /// CPU.
    pub cpu_millis: Option<u64>,
    /// Memory.
    pub memory_bytes: Option<u64>,
    /// Ephemeral storage.
    pub ephemeral_bytes: Option<u64>,
}

impl InstanceType {
    /// What pods can use: capacity minus kubelet and system reservations,
    /// the eviction threshold and the hypervisor's share of memory, computed
    /// the way EKS AMIs size `kube-reserved`.
    pub fn allocatable(&self) -> Resources {
        self.allocatable_with(&KubeletConfig::default())
    }

    /// Most pods on a node of this type under `kubelet`.
    pub fn pods_with(&self, kubelet: &KubeletConfig) -> u32 {
        let pods = kubelet.max_pods.unwrap_or(self.max_pods.min(110));
        match kubelet.pods_per_core {
            Some(per_core) => pods.min(per_core.saturating_mul(self.vcpu)),
            None => pods,
        }
    }

    /// [`InstanceType::allocatable`] under the node class's `kubelet`
    /// settings, as Karpenter computes it: the pod count from `maxPods` and
    /// `podsPerCore` (and the memory reservation sized by it), `kubeReserved`
    /// in place of the computed reservation, `systemReserved` on top, and
    /// the hard eviction threshold for memory.
    pub fn allocatable_with(&self, kubelet: &KubeletConfig) -> Resources {
        let pods = self.pods_with(kubelet);
        let cores = self.vcpu as u64;
        // kube-reserved CPU: 6 % of the first core, 1 % of the second,
        // 0.5 % of the third and fourth, 0.25 % of the rest (in millicores).
        let reserved_cpu = match cores {
            0 => 0,
            1 => 60,
            _ => 70 + 5 * cores.min(4).saturating_sub(2) + cores.saturating_sub(4) * 25 / 10,
        };
        let reserved_cpu = kubelet.kube_reserved.cpu_millis.unwrap_or(reserved_cpu).saturating_add(kubelet.system_reserved.cpu_millis.unwrap_or(0));
        let capacity_mem = self.memory_mib * MIB;
        let vm_overhead = capacity_mem * 75 / 1000;
        // kube-reserved memory: 11 MiB a pod plus 255 MiB, for the pods the
        // kubelet will run; the eviction threshold, 100 MiB by default.
        // (By default the instance type's ENI pod count sizes it, as the EKS AMIs do.)
        let sizing = if kubelet.max_pods.is_some() || kubelet.pods_per_core.is_some() { pods } else { self.max_pods };
        let kube_mem = kubelet.kube_reserved.memory_bytes.unwrap_or((11 * u64::from(sizing) + 255) * MIB);
        let reserved_mem = kube_mem
            .saturating_add(kubelet.system_reserved.memory_bytes.unwrap_or(0))
            .saturating_add(kubelet.eviction_memory_bytes.unwrap_or(100 * MIB));
        let root: u64 = ROOT_VOLUME_GIB << 30;
        // 1 GiB kube-reserved and a 10 % eviction threshold off the root volume.
        let reserved_disk = kubelet
            .kube_reserved
            .ephemeral_bytes
            .unwrap_or(1 << 30)
            .saturating_add(kubelet.system_reserved.ephemeral_bytes.unwrap_or(0))
            .saturating_add(root / 10);
        Resources {
            cpu_millis: u32::try_from((cores * 1000).saturating_sub(reserved_cpu)).unwrap_or(u32::MAX),
            memory_bytes: capacity_mem.saturating_sub(vm_overhead).saturating_sub(reserved_mem),
            pods,
            gpus: self.gpus,
            ephemeral_bytes: root.saturating_sub(reserved_disk),
        }
    }

    /// What the machine has, before reservations (NodePool limits count this).
    pub fn capacity(&self) -> Resources {
        Resources {
            cpu_millis: self.vcpu * 1000,
            memory_bytes: self.memory_mib * MIB,
            pods: self.max_pods.min(110),
            gpus: self.gpus,
            ephemeral_bytes: ROOT_VOLUME_GIB << 30,
        }
    }

    /// The seeded spot model used until real spot prices are known: a
    /// discount off on-demand that depends on the family (45 % to 75 % off)
    /// and an interruption bucket that depends on the type. Both come from a
    /// stable hash, so every run sees the same numbers.
    pub fn modelled_spot(&self) -> (f64, InterruptionRate) {
        let family_hash = stable_hash(&self.family);
        let discount = 0.45 + (family_hash % 3001) as f64 / 10_000.0;
        let bucket = InterruptionRate::ALL[(stable_hash(&self.name) % 5) as usize];
        let price = (self.on_demand_price * (1.0 - discount) * 1e6).round() / 1e6;
        (price, bucket)
    }

    /// The offerings of this type: on-demand and spot in each of `zones`.
    pub fn offerings<'a>(&'a self, zones: &'a [&'a str]) -> impl Iterator<Item = Offering> + 'a {
        let (spot_price, bucket) = self.modelled_spot();
        let allocatable = self.allocatable();
        let capacity = self.capacity();
        zones.iter().flat_map(move |zone| {
            [
                (CapacityType::OnDemand, self.on_demand_price, InterruptionRate::VeryLow),
                (CapacityType::Spot, spot_price, bucket),
            ]
            .into_iter()
            .map(move |(capacity_type, price_per_hour, interruption)| Offering {
                instance_type: self.name.clone(),
                family: self.family.clone(),
                generation: self.generation,
                arch: self.arch,
                zone: zone.to_string(),
                capacity_type,
                price_per_hour,
                allocatable,
                capacity,
                interruption,
                node_classes: None,
            })
        })
    }
}

/// FNV-1a: stable across runs, platforms and Rust versions (unlike `DefaultHasher`).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Every offering the host may refer to, under a version that changes when any offering does.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    /// Content version: a hash of every offering.
    pub version: u64,
    /// Offerings, referred to by index.
    pub offerings: Vec<Offering>,
    /// Zones in order of first appearance, and each offering's index into
    /// them (computed once: schedulers read it on every pass).
    pub zones: std::sync::Arc<(Vec<String>, Vec<usize>)>,
    /// Offering indices, largest allocatable first (CPU, then memory, then
    /// index): the order the scheduler keeps a NodeClaim's offerings in.
    pub largest_first: std::sync::Arc<Vec<u32>>,
    /// Offering indices, cheapest first (price, then index): a list of
    /// offerings is put in price order by filtering this one instead of
    /// sorting it.
    pub cheapest_first: std::sync::Arc<Vec<u32>>,
    /// What the scheduler reads of each offering, by index, packed apart
    /// from the rest of [`Offering`]: it walks thousands of offerings for
    /// every NodeClaim it fills, and this keeps the walk in cache.
    pub fit: std::sync::Arc<Vec<Fit>>,
}

/// Is `spot` a spot offering of `offering`'s instance type, in its zone,
/// at no higher price?
pub fn is_spot_twin(offering: &Offering, spot: &Offering) -> bool {
    spot.capacity_type == super::CapacityType::Spot
        && spot.instance_type == offering.instance_type
        && spot.zone == offering.zone
        && spot.price_per_hour <= offering.price_per_hour
}

/// An offering's sizes and price ([`Catalog::fit`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// [`Offering::allocatable`].
    pub allocatable: Resources,
    /// [`Offering::capacity`].
    pub capacity: Resources,
    /// [`Offering::price_per_hour`].
    pub price_per_hour: f64,
    /// Its position in [`Catalog::largest_first`].
    pub largest_rank: u32,
    /// The next offering (by index) is this one's spot twin: a spot
    /// offering of the same instance type in the same zone, at no higher
    /// price. Catalogs list each type's spot offering in a zone right after
    /// its on-demand one; consolidation asks this of every offering a
    /// NodePool may buy, whenever the list changes.
    pub spot_twin_next: bool,
}

impl Catalog {
    /// A catalog of `offerings`, versioned by their content.
    pub fn new(offerings: Vec<Offering>) -> Self {
        let mut zones: Vec<String> = Vec::new();
        let zone_of = offerings
            .iter()
            .map(|o| match zones.iter().position(|z| *z == o.zone) {
                Some(i) => i,
                None => {
                    zones.push(o.zone.clone());
                    zones.len() - 1
                }
            })
            .collect();
        let mut largest_first: Vec<u32> = (0..offerings.len()).filter_map(|i| u32::try_from(i).ok()).collect();
        largest_first.sort_unstable_by_key(|&i| {
            let a = &offerings[i as usize].allocatable;
            (std::cmp::Reverse((a.cpu_millis, a.memory_bytes)), i)
        });
        Self::with_orders(offerings, std::sync::Arc::new((zones, zone_of)), std::sync::Arc::new(largest_first))
    }

    /// This catalog with `offerings` instead: the same offerings in the same
    /// order, prices aside (a repricing). What does not depend on prices
    /// (zones, the largest-first order) is kept; the rest is as
    /// [`Catalog::new`] makes it, the version included. Offerings that
    /// differ in more than prices make a catalog as [`Catalog::new`] does.
    pub fn repriced(&self, offerings: Vec<Offering>) -> Self {
        let same = offerings.len() == self.offerings.len()
            && offerings.iter().zip(&self.offerings).all(|(a, b)| a.zone == b.zone && a.allocatable == b.allocatable);
        if !same {
            return Catalog::new(offerings);
        }
        Self::with_orders(offerings, self.zones.clone(), self.largest_first.clone())
    }

    /// A catalog of `offerings`, given its zones and largest-first order.
    fn with_orders(offerings: Vec<Offering>, zones: std::sync::Arc<(Vec<String>, Vec<usize>)>, largest_first: std::sync::Arc<Vec<u32>>) -> Self {
        let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
        for o in &offerings {
            o.instance_type.hash(&mut hasher);
            o.zone.hash(&mut hasher);
            (o.capacity_type as u8).hash(&mut hasher);
            o.price_per_hour.to_bits().hash(&mut hasher);
            o.allocatable.hash(&mut hasher);
            o.capacity.hash(&mut hasher);
            (o.interruption as u8).hash(&mut hasher);
            (o.arch as u8).hash(&mut hasher);
            o.generation.hash(&mut hasher);
            o.family.hash(&mut hasher);
            // Which NodePools may launch it (hashed only where some are
            // named, so a catalog without restrictions keeps its version).
            if let Some(classes) = &o.node_classes {
                classes.hash(&mut hasher);
            }
        }
        let mut cheapest_first: Vec<u32> = (0..offerings.len()).filter_map(|i| u32::try_from(i).ok()).collect();
        cheapest_first.sort_unstable_by(|&a, &b| offerings[a as usize].price_per_hour.total_cmp(&offerings[b as usize].price_per_hour).then(a.cmp(&b)));
        let mut fit: Vec<Fit> = offerings
            .iter()
            .map(|o| Fit { allocatable: o.allocatable, capacity: o.capacity, price_per_hour: o.price_per_hour, largest_rank: 0, spot_twin_next: false })
            .collect();
        for (i, pair) in offerings.windows(2).enumerate() {
            fit[i].spot_twin_next = is_spot_twin(&pair[0], &pair[1]);
        }
        for (rank, &o) in largest_first.iter().enumerate() {
            if let Some(f) = fit.get_mut(o as usize) {
                f.largest_rank = u32::try_from(rank).unwrap_or(u32::MAX);
            }
        }
        Catalog { version: hasher.0, fit: std::sync::Arc::new(fit), offerings, zones, largest_first, cheapest_first: std::sync::Arc::new(cheapest_first) }
    }

    /// The bundled instance types, on-demand and spot in every zone of [`ZONES`].
    pub fn bundled() -> Self {
        let types = bundled_instance_types();
        Catalog::new(types.iter().flat_map(|t| t.offerings(&ZONES)).collect())
    }

    /// `n` of the bundled instance types, spread evenly over the list, on-demand
    /// and spot in every zone of [`ZONES`].
    pub fn bundled_types(n: usize) -> Self {
        let types = bundled_instance_types();
        let step = (types.len() as f64 / n.clamp(1, types.len()) as f64).max(1.0);
        let chosen = (0..n.min(types.len())).map(|i| &types[(i as f64 * step) as usize]);
        Catalog::new(chosen.flat_map(|t| t.offerings(&ZONES)).collect())
    }

    /// The first `n` offerings of the bundled catalog, spread over all
    /// instance types (for benchmarks and tests that want a given size).
    pub fn bundled_sample(n: usize) -> Self {
        let all = Catalog::bundled().offerings;
        let step = (all.len() / n.max(1)).max(1);
        Catalog::new(all.into_iter().step_by(step).take(n).collect())
    }

    /// Indices of the offerings whose allocatable resources cover `need`.
    pub fn feasible_for(&self, need: &Resources) -> Vec<u32> {
        (0..self.offerings.len() as u32)
            .filter(|&i| self.offerings[i as usize].allocatable.covers(need))
            .collect()
    }
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_repriced_catalog_is_the_catalog_its_offerings_make_and_one_that_changed_more_is_rebuilt() {
        let base = Catalog::bundled();
        let mut offerings = base.offerings.clone();
        for (i, o) in offerings.iter_mut().enumerate() {
            if o.capacity_type == CapacityType::Spot {
                o.price_per_hour = (o.price_per_hour * (0.7 + (i % 7) as f64 * 0.1) * 1e6).round() / 1e6;
            }
        }
        let repriced = base.repriced(offerings.clone());
        assert_eq!(repriced, Catalog::new(offerings.clone()));
        assert_ne!(repriced.version, base.version);
        assert_ne!(repriced.cheapest_first, base.cheapest_first);
        assert!(std::sync::Arc::ptr_eq(&repriced.largest_first, &base.largest_first), "the order by size is kept");
        // A size changed: the order by size is worked out again.
        offerings[0].allocatable.cpu_millis = 1_000_000;
        let resized = base.repriced(offerings.clone());
        assert_eq!(resized, Catalog::new(offerings));
        assert_eq!(resized.largest_first[0], 0);
    }

    #[test]
    fn kubelet_settings_change_what_pods_can_use() {
        let types = bundled_instance_types();
        let m5 = types.iter().find(|t| t.name == "m5.xlarge").unwrap();
        let base = m5.allocatable();
        assert_eq!(m5.allocatable_with(&KubeletConfig::default()), base);
        let max = KubeletConfig { max_pods: Some(20), ..KubeletConfig::default() };
        let with = m5.allocatable_with(&max);
        assert_eq!(with.pods, 20);
        // 11 MiB less kube-reserved memory for each pod fewer.
        assert_eq!(with.memory_bytes - base.memory_bytes, 11 * u64::from(m5.max_pods - 20) * MIB);
        let per_core = KubeletConfig { pods_per_core: Some(2), ..KubeletConfig::default() };
        assert_eq!(m5.allocatable_with(&per_core).pods, 8, "2 per vCPU on 4 vCPUs");
        let reserved = KubeletConfig {
            kube_reserved: Reserved { cpu_millis: Some(200), memory_bytes: Some(1 << 30), ephemeral_bytes: None },
            system_reserved: Reserved { cpu_millis: Some(100), ..Reserved::default() },
            eviction_memory_bytes: Some(500 * MIB),
            ..KubeletConfig::default()
        };
        let with = m5.allocatable_with(&reserved);
        assert_eq!(with.cpu_millis, 4000 - 300);
        let capacity = m5.memory_mib * MIB;
        assert_eq!(with.memory_bytes, capacity - capacity * 75 / 1000 - (1 << 30) - 500 * MIB);
    }

    use super::*;

    #[test]
    fn bundled_catalog_parses_with_every_type() {
        let types = bundled_instance_types();
        assert_eq!(types.len(), 1340);
        let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
        assert_eq!((m5.vcpu, m5.memory_mib, m5.arch, m5.max_pods), (2, 8192, Arch::Amd64, 29));
    }

    #[test]
    fn allocatable_takes_reservations_off() {
        let types = bundled_instance_types();
        let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
        let a = m5.allocatable();
        assert_eq!(a.cpu_millis, 2000 - 70);
        assert!(a.memory_bytes < 8192 * MIB && a.memory_bytes > 6 * 1024 * MIB, "{}", a.memory_bytes);
        assert_eq!(a.pods, 29);
    }

    #[test]
    fn a_bad_catalog_line_names_file_line_and_field() {
        let text = format!("{}\nm5.large,m5,5,2,8192,sparc,0,29,0.096\n", HEADER.join(","));
        let err = parse_instance_types("my.csv", &text).unwrap_err();
        assert_eq!(err.to_string(), "my.csv:2: arch: `sparc` is not amd64 or arm64");
        let text = format!("{}\nm5.large,m5,5,two,8192,amd64,0,29,0.096\n", HEADER.join(","));
        let err = parse_instance_types("my.csv", &text).unwrap_err();
        assert_eq!(err.to_string(), "my.csv:2: vcpu: `two` is not a number");
    }

    #[test]
    fn catalog_version_follows_content() {
        let a = Catalog::bundled_sample(50);
        let mut changed = a.offerings.clone();
        changed[3].price_per_hour += 0.001;
        assert_eq!(a.version, Catalog::bundled_sample(50).version);
        assert_ne!(a.version, Catalog::new(changed).version);
    }
}
