//! The labels a new node of a NodePool would carry, offering by offering,
//! and which offerings a set of requirements allows.

use std::collections::BTreeMap;

use super::bitset::Bitset;
use crate::model::{Catalog, MinValues, NodePool, Offering, Operator, Requirement, well_known};

/// The value of well-known label `key` on a node bought as `offering`.
pub fn offering_label(offering: &Offering, key: &str) -> Option<String> {
    Some(match key {
        well_known::INSTANCE_TYPE => offering.instance_type.clone(),
        well_known::ARCH => serde_plain(offering.arch),
        well_known::OS => "linux".into(),
        well_known::ZONE => offering.zone.clone(),
        well_known::CAPACITY_TYPE => serde_plain(offering.capacity_type),
        well_known::FAMILY => offering.family.clone(),
        well_known::CATEGORY => offering.family.chars().take_while(|c| c.is_ascii_alphabetic()).collect(),
        well_known::GENERATION => offering.generation.to_string(),
        well_known::CPU => (offering.capacity.cpu_millis / 1000).to_string(),
        well_known::MEMORY => (offering.capacity.memory_bytes >> 20).to_string(),
        well_known::GPU_COUNT => offering.capacity.gpus.to_string(),
        _ => return None,
    })
}

/// The first `minValues` that `offerings` fall short of, said as
/// "at least N distinct KEY values (M here)"; `None` if they keep them all.
pub(crate) fn min_values_short(catalog: &Catalog, min_values: &[MinValues], offerings: &[u32]) -> Option<String> {
    min_values.iter().find_map(|m| {
        let distinct: std::collections::HashSet<String> =
            offerings.iter().filter_map(|&o| offering_label(&catalog.offerings[o as usize], &m.key)).collect();
        (distinct.len() < m.count as usize).then(|| format!("at least {} distinct {} values ({} here)", m.count, m.key, distinct.len()))
    })
}

/// The offerings one launch is given: at most `max` of `ranked` (best
/// first), in rank order, keeping `min_values`: for each, the best-ranked
/// offering of each value until there are enough distinct values, then the
/// best of the rest. `Err` says which `minValues` cannot be kept, by all of
/// `ranked` or within `max`.
pub fn launch_offerings(catalog: &Catalog, ranked: &[u32], min_values: &[MinValues], max: usize) -> Result<Vec<u32>, String> {
    // Nothing ranked: the caller says why.
    if min_values.is_empty() || ranked.is_empty() {
        return Ok(ranked.iter().copied().take(max).collect());
    }
    if let Some(short) = min_values_short(catalog, min_values, ranked) {
        return Err(short);
    }
    let label = |o: u32, key: &str| offering_label(&catalog.offerings[o as usize], key);
    let mut chosen = vec![false; ranked.len()];
    let mut count = 0usize;
    for m in min_values {
        let mut seen: std::collections::HashSet<String> =
            ranked.iter().zip(&chosen).filter(|(_, c)| **c).filter_map(|(&o, _)| label(o, &m.key)).collect();
        for (i, &o) in ranked.iter().enumerate() {
            if seen.len() >= m.count as usize {
                break;
            }
            if !chosen[i] && label(o, &m.key).is_some_and(|v| seen.insert(v)) {
                chosen[i] = true;
                count += 1;
            }
        }
    }
    if count > max {
        return Err(format!("more than the {max} offerings a launch takes to keep every minValues"));
    }
    for c in chosen.iter_mut() {
        if count >= max {
            break;
        }
        if !*c {
            *c = true;
            count += 1;
        }
    }
    Ok(ranked.iter().zip(&chosen).filter(|(_, c)| **c).map(|(&o, _)| o).collect())
}

fn serde_plain<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// Every label of a node bought as `offering` in `pool` named `hostname`.
pub fn node_labels(offering: &Offering, pool: &NodePool, hostname: &str) -> BTreeMap<String, String> {
    let mut labels = pool.labels.clone();
    for requirement in &pool.requirements {
        if requirement.operator == Operator::In
            && requirement.values.len() == 1
            && !well_known::OFFERING_KEYS.contains(&requirement.key.as_str())
        {
            labels.insert(requirement.key.clone(), requirement.values[0].clone());
        }
    }
    for key in well_known::OFFERING_KEYS {
        if let Some(value) = offering_label(offering, key) {
            labels.insert(key.into(), value);
        }
    }
    labels.insert(well_known::NODE_POOL.into(), pool.name.clone());
    labels.insert(well_known::HOSTNAME.into(), hostname.into());
    labels
}

/// Can a new node of `pool` bought as `offering` satisfy `requirement`?
fn pool_allows(pool: &NodePool, offering: &Offering, requirement: &Requirement) -> bool {
    let key = requirement.key.as_str();
    if well_known::OFFERING_KEYS.contains(&key) {
        return requirement.matches(offering_label(offering, key).as_deref());
    }
    match key {
        well_known::NODE_POOL => requirement.matches(Some(&pool.name)),
        // A new node's name is not known yet, but it has one.
        well_known::HOSTNAME => matches!(requirement.operator, Operator::NotIn | Operator::Exists),
        _ => {
            if let Some(value) = pool.labels.get(key) {
                return requirement.matches(Some(value));
            }
            // A pool requirement on a custom key: the node gets one of its values.
            match pool.requirements.iter().find(|r| r.key == key && r.operator == Operator::In) {
                Some(allowed) => allowed.values.iter().any(|v| requirement.matches(Some(v))),
                None => requirement.matches(None),
            }
        }
    }
}

/// What was worked out from a catalog, remembered by (catalog version, hash
/// of what else it depends on).
pub(crate) type Remembered<T> = std::sync::Mutex<Option<std::collections::HashMap<(u64, u64), T>>>;

/// The value `key` stands for in `cache`, computed by `compute` the first time.
/// Old catalog versions are not asked for again, so past `limit` entries the
/// cache starts over. The lock is not held while computing.
pub(crate) fn remembered<T: Clone>(cache: &Remembered<T>, key: (u64, u64), limit: usize, compute: impl FnOnce() -> T) -> T {
    if let Some(value) = cache.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Default::default).get(&key) {
        return value.clone();
    }
    let value = compute();
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    let values = cache.get_or_insert_with(Default::default);
    if values.len() >= limit {
        values.clear();
    }
    values.insert(key, value.clone());
    value
}

/// The key of what `catalog` and `pool` decide, with `rest`: the catalog's
/// version, and the pool's name, requirements, labels and node class hashed
/// with `rest` (by `DefaultHasher`).
pub(crate) fn pool_key(catalog: &Catalog, pool: &NodePool, rest: impl std::hash::Hash) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&pool.name, &pool.requirements, &pool.labels, &pool.node_class, rest).hash(&mut hasher);
    (catalog.version, hasher.finish())
}

/// Offerings of `catalog` a node of `pool` may be bought as, remembered per
/// (catalog version, pool): every provisioning pass and every consolidation
/// simulation asks again, and simulations running side by side each have
/// catalogs of their own.
pub(crate) fn pool_offerings(catalog: &Catalog, pool: &NodePool) -> Bitset {
    static CACHE: Remembered<Bitset> = std::sync::Mutex::new(None);
    remembered(&CACHE, pool_key(catalog, pool, ()), 1024, || compute_pool_offerings(catalog, pool))
}

fn compute_pool_offerings(catalog: &Catalog, pool: &NodePool) -> Bitset {
    let mut set = Bitset::empty(catalog.offerings.len());
    for (i, offering) in catalog.offerings.iter().enumerate() {
        if offering.serves(pool.node_class.as_deref()) && pool.requirements.iter().all(|r| pool_allows(pool, offering, r)) {
            set.insert(i as u32);
        }
    }
    set
}

/// Offerings among `base` (the pool's own, [`pool_offerings`]) that satisfy
/// every requirement of one of `terms` (an empty list of terms allows all of
/// `base`). Remembered per (catalog version, pool, terms), as
/// [`pool_offerings`] is: every consolidation simulation asks again for the
/// same pods.
pub(crate) fn offerings_for_terms(catalog: &Catalog, pool: &NodePool, base: &Bitset, terms: &[Vec<Requirement>]) -> Bitset {
    static CACHE: Remembered<Bitset> = std::sync::Mutex::new(None);
    if terms.is_empty() {
        return base.clone();
    }
    remembered(&CACHE, pool_key(catalog, pool, terms), 4096, || compute_offerings_for_terms(catalog, pool, base, terms))
}

fn compute_offerings_for_terms(catalog: &Catalog, pool: &NodePool, base: &Bitset, terms: &[Vec<Requirement>]) -> Bitset {
    let mut set = Bitset::empty(catalog.offerings.len());
    for i in base.iter() {
        let offering = &catalog.offerings[i as usize];
        if terms.iter().any(|term| term.iter().all(|r| pool_allows(pool, offering, r))) {
            set.insert(i);
        }
    }
    set
}
