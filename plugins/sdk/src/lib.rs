//! Write nodewright policy plugins in Rust.
//!
//! A plugin is a type that implements [`Selector`] (which offering to buy),
//! [`Consolidator`] (which nodes to remove), or both, exported with
//! [`export!`]. The crate feature chosen in `Cargo.toml` picks the WIT world
//! the component targets: `selector` → `instance-selector`, `consolidator` →
//! `consolidator`, both → `policy`. Plugins speak contract 0.1.0 unless the
//! `what-if` feature selects 0.2.0, which adds the host's `what-if` query,
//! or the `fleet` feature selects 0.3.0, which adds the fleet and the
//! commitments ([`fleet`], [`economics`]) and richer pods.
//!
//! ```ignore
//! use nodewright_plugin::{Catalog, Ranking, SelectionRequest, Selector};
//! struct Cheapest;
//! impl Selector for Cheapest {
//!     fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String> {
//!         Ok(nodewright_plugin::score_each(request, catalog, |o| Some(o.price_per_hour)))
//!     }
//! }
//! nodewright_plugin::export!(Cheapest);
//! ```

#[cfg(not(any(feature = "selector", feature = "consolidator")))]
compile_error!("enable the `selector` feature, the `consolidator` feature, or both");

/// Generate the bindings of `$world` from the contract in `$path`.
macro_rules! bindings {
    ($path:literal, $world:literal) => {
        wit_bindgen::generate!({
            path: $path,
            world: $world,
            pub_export_macro: true,
            export_macro_name: "__export_world",
            default_bindings_module: "nodewright_plugin",
        });
    };
}

// Contract 0.1.0 unless the `what-if` feature asks for 0.2.0 or `fleet` for 0.3.0.
#[cfg(all(feature = "selector", feature = "consolidator", not(feature = "what-if")))]
bindings!("../../wit/v0.1.0", "policy");
#[cfg(all(feature = "selector", not(feature = "consolidator"), not(feature = "what-if")))]
bindings!("../../wit/v0.1.0", "instance-selector");
#[cfg(all(feature = "consolidator", not(feature = "selector"), not(feature = "what-if")))]
bindings!("../../wit/v0.1.0", "consolidator");
#[cfg(all(feature = "selector", feature = "consolidator", feature = "what-if", not(feature = "fleet")))]
bindings!("../../wit/v0.2.0", "policy");
#[cfg(all(feature = "selector", not(feature = "consolidator"), feature = "what-if", not(feature = "fleet")))]
bindings!("../../wit/v0.2.0", "instance-selector");
#[cfg(all(feature = "consolidator", not(feature = "selector"), feature = "what-if", not(feature = "fleet")))]
bindings!("../../wit/v0.2.0", "consolidator");
#[cfg(all(feature = "selector", feature = "consolidator", feature = "fleet"))]
bindings!("../../wit/v0.3.0", "policy");
#[cfg(all(feature = "selector", not(feature = "consolidator"), feature = "fleet"))]
bindings!("../../wit/v0.3.0", "instance-selector");
#[cfg(all(feature = "consolidator", not(feature = "selector"), feature = "fleet"))]
bindings!("../../wit/v0.3.0", "consolidator");

use std::cell::RefCell;
use std::rc::Rc;

pub use nodewright::policy::host::Level;
pub use nodewright::policy::types::{Arch, CapacityType, InterruptionRate, Offering, Resources};

/// The catalog the host handed over: offerings under a version number.
pub type Catalog = nodewright::policy::types::Catalog;

#[cfg(feature = "fleet")]
pub use nodewright::policy::types::{Fleet, Pod, PodTag, PoolHistory, Reservation, SavingsPlan};

/// Nodes of a NodePool running (or launching as) an offering: one entry of
/// the fleet's flat `running` list, read with [`Fleet::counts`].
#[cfg(feature = "fleet")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetCount {
    /// The NodePool: its index in the fleet's `node_pools`.
    pub node_pool: u32,
    /// Catalog index.
    pub offering: u32,
    /// Nodes (never 0).
    pub count: u32,
}

#[cfg(feature = "fleet")]
impl Fleet {
    /// The running and launching nodes per NodePool and offering: the
    /// `running` list, which the contract carries as flat triples.
    pub fn counts(&self) -> impl Iterator<Item = FleetCount> + '_ {
        self.running.chunks_exact(3).map(|c| FleetCount { node_pool: c[0], offering: c[1], count: c[2] })
    }
}

/// The pods' strings of one call (contract 0.3.0): a request's or a
/// snapshot's `strings`, `labels` and `annotations`. A pod names its
/// workload, and a tag its key and value, by index into `strings`.
#[cfg(feature = "fleet")]
#[derive(Clone, Copy)]
pub struct PodStrings<'a> {
    /// The call's strings.
    pub strings: &'a [String],
    /// The pods' labels the NodePool names.
    pub labels: &'a [PodTag],
    /// The pods' annotations the NodePool names.
    pub annotations: &'a [PodTag],
}

#[cfg(feature = "fleet")]
impl<'a> PodStrings<'a> {
    /// String `index` of the call (the empty string past the end: the host
    /// never names one).
    pub fn text(&self, index: u32) -> &'a str {
        self.strings.get(index as usize).map_or("", String::as_str)
    }

    /// The workload of `pod` (its `app` label; empty when unknown).
    pub fn workload(&self, pod: &Pod) -> &'a str {
        self.text(pod.workload)
    }

    /// The value of label `key` of the call's `pod`-th pod, when the
    /// NodePool names that key and the pod has it.
    pub fn label(&self, pod: u32, key: &str) -> Option<&'a str> {
        self.tag(self.labels, pod, key)
    }

    /// The value of annotation `key` of the call's `pod`-th pod, as [`PodStrings::label`].
    pub fn annotation(&self, pod: u32, key: &str) -> Option<&'a str> {
        self.tag(self.annotations, pod, key)
    }

    fn tag(&self, tags: &[PodTag], pod: u32, key: &str) -> Option<&'a str> {
        tags.iter().find(|t| t.pod == pod && self.text(t.key) == key).map(|t| self.text(t.value))
    }
}

#[cfg(all(feature = "fleet", feature = "selector"))]
impl SelectionRequest {
    /// The strings of this request's pods.
    pub fn pod_strings(&self) -> PodStrings<'_> {
        PodStrings { strings: &self.strings, labels: &self.labels, annotations: &self.annotations }
    }
}

#[cfg(all(feature = "fleet", feature = "consolidator"))]
impl Snapshot {
    /// The strings of this snapshot's pods (pods counted over all nodes,
    /// node after node).
    pub fn pod_strings(&self) -> PodStrings<'_> {
        PodStrings { strings: &self.strings, labels: &self.labels, annotations: &self.annotations }
    }
}

/// The requests of a pod, whatever form the contract version gives it in
/// (0.1.0 and 0.2.0: its requests; 0.3.0: a [`Pod`]).
pub trait Requests {
    /// Its requests.
    fn requests(&self) -> Resources;
}

impl Requests for Resources {
    fn requests(&self) -> Resources {
        *self
    }
}

#[cfg(feature = "fleet")]
impl Requests for Pod {
    fn requests(&self) -> Resources {
        self.requests
    }
}

#[cfg(feature = "selector")]
pub use exports::nodewright::policy::instance_selection::{Ranking, SelectionRequest};

#[cfg(feature = "consolidator")]
pub use exports::nodewright::policy::consolidation::{Action, Node, Replacement, Snapshot};

/// Chooses which offering to buy for a new node.
#[cfg(feature = "selector")]
pub trait Selector {
    /// Score the feasible offerings of `request`; lower is preferred, an
    /// offering left out is not bought.
    fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String>;
}

/// Proposes nodes to delete or replace.
#[cfg(feature = "consolidator")]
pub trait Consolidator {
    /// Propose actions for `snapshot`; an empty list leaves the nodes alone.
    fn plan(snapshot: &Snapshot, catalog: &Catalog) -> Result<Vec<Action>, String>;
}

thread_local! {
    static CATALOG: RefCell<Option<Rc<Catalog>>> = const { RefCell::new(None) };
    static COLUMNS: RefCell<Option<Rc<Columns>>> = const { RefCell::new(None) };
}

/// What a policy reads of every offering, packed by catalog index: built
/// once when the host hands a catalog over. A loop over thousands of
/// feasible offerings reads these instead of the offerings themselves
/// (each offering also holds its names, so a walk over them touches far
/// more memory).
#[derive(Debug, Default)]
pub struct Columns {
    /// Version of the catalog these come from.
    pub version: u64,
    /// Price per hour of each offering.
    pub price_per_hour: Vec<f64>,
    /// Capacity type of each offering.
    pub capacity_type: Vec<CapacityType>,
    /// Every offering's index, cheapest first (ties by index): sorted on
    /// first use, since only some policies read it.
    by_price: std::cell::OnceCell<Vec<u32>>,
}

impl Columns {
    fn of(catalog: &Catalog) -> Self {
        Columns {
            version: catalog.version,
            price_per_hour: catalog.offerings.iter().map(|o| o.price_per_hour).collect(),
            capacity_type: catalog.offerings.iter().map(|o| o.capacity_type).collect(),
            by_price: std::cell::OnceCell::new(),
        }
    }

    /// Every offering's index, cheapest first (ties by index).
    pub fn by_price(&self) -> &[u32] {
        self.by_price.get_or_init(|| {
            let price = &self.price_per_hour;
            let mut order: Vec<u32> = (0..price.len() as u32).collect();
            order.sort_by(|&a, &b| price[a as usize].total_cmp(&price[b as usize]).then(a.cmp(&b)));
            order
        })
    }

    /// The price per hour of offering `index` (`f64::MAX` past the catalog:
    /// the host never names one, and such a score is never preferred).
    pub fn price(&self, index: u32) -> f64 {
        self.price_per_hour.get(index as usize).copied().unwrap_or(f64::MAX)
    }

    /// Is offering `index` spot?
    pub fn is_spot(&self, index: u32) -> bool {
        self.capacity_type.get(index as usize) == Some(&CapacityType::Spot)
    }
}

/// The [`Columns`] of the catalog held (empty before the host hands one over).
pub fn columns() -> Rc<Columns> {
    COLUMNS.with(|slot| slot.borrow().clone()).unwrap_or_default()
}

/// Keep `catalog` for the calls that follow (called by the host through [`export!`]).
#[doc(hidden)]
pub fn __set_catalog(catalog: Catalog) -> Result<(), String> {
    COLUMNS.with(|slot| *slot.borrow_mut() = Some(Rc::new(Columns::of(&catalog))));
    CATALOG.with(|slot| *slot.borrow_mut() = Some(Rc::new(catalog)));
    Ok(())
}

/// The catalog held, if any.
#[cfg(feature = "fleet")]
fn held_catalog() -> Option<Rc<Catalog>> {
    CATALOG.with(|slot| slot.borrow().clone())
}

/// Run `f` with the catalog of version `version`, or fail if the host never sent it.
#[doc(hidden)]
pub fn __with_catalog<R>(version: u64, f: impl FnOnce(&Catalog) -> Result<R, String>) -> Result<R, String> {
    let catalog = CATALOG.with(|slot| slot.borrow().clone());
    match catalog {
        Some(catalog) if catalog.version == version => f(&catalog),
        Some(catalog) => Err(format!(
            "request names catalog version {version}, plugin holds version {}",
            catalog.version
        )),
        None => Err(format!("request names catalog version {version}, plugin holds none")),
    }
}

#[cfg(feature = "consolidator")]
thread_local! {
    /// The snapshot of the plan call being answered (null between calls).
    static PLANNING: std::cell::Cell<*const Snapshot> = const { std::cell::Cell::new(std::ptr::null()) };
    /// What helpers worked out about that snapshot once per call: its
    /// replacements cheapest first, for the catalog version they were
    /// sorted by.
    static PLAN_MEMO: RefCell<Option<(u64, Rc<[u32]>)>> = const { RefCell::new(None) };
}

/// Answer a plan call about `snapshot` with `f` (called by [`export!`]):
/// helpers asked about this very snapshot during the call may keep what
/// they work out until it ends. (The host's snapshot is borrowed for the
/// whole call, so no other snapshot can be at its address meanwhile.)
#[cfg(feature = "consolidator")]
#[doc(hidden)]
pub fn __planning<R>(snapshot: &Snapshot, f: impl FnOnce() -> R) -> R {
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            PLANNING.with(|p| p.set(std::ptr::null()));
            PLAN_MEMO.with_borrow_mut(|memo| *memo = None);
        }
    }
    PLAN_MEMO.with_borrow_mut(|memo| *memo = None);
    PLANNING.with(|p| p.set(snapshot));
    let _done = Done;
    f()
}

/// Is `snapshot` the one the plan call being answered was handed?
#[cfg(all(feature = "consolidator", feature = "what-if"))]
fn planning(snapshot: &Snapshot) -> bool {
    PLANNING.with(|p| std::ptr::eq(p.get(), snapshot))
}

#[cfg(feature = "fleet")]
thread_local! {
    static FLEET: RefCell<Option<Rc<Fleet>>> = const { RefCell::new(None) };
}

/// Keep `fleet`, which a call carried, for the calls that follow (called
/// through [`export!`] before the plugin's own code: a request or snapshot
/// the plugin is handed never holds the fleet, [`fleet`] does).
#[cfg(feature = "fleet")]
#[doc(hidden)]
pub fn __set_fleet(fleet: Fleet) {
    FLEET.with(|slot| *slot.borrow_mut() = Some(Rc::new(fleet)));
}

/// Check that the fleet of version `version` is held, then run `f`.
#[cfg(feature = "fleet")]
#[doc(hidden)]
pub fn __check_fleet<R>(version: u64, f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    match FLEET.with(|slot| slot.borrow().as_ref().map(|f| f.version)) {
        Some(held) if held == version => f(),
        Some(held) => Err(format!("request names fleet version {version}, plugin holds version {held}")),
        None => Err(format!("request names fleet version {version}, plugin holds none")),
    }
}

/// The fleet the current call refers to: running nodes per NodePool and
/// offering, the commitments and their use, recent failures per pool.
/// Contract 0.3.0 (`fleet` feature).
#[cfg(feature = "fleet")]
pub fn fleet() -> Rc<Fleet> {
    FLEET.with(|slot| slot.borrow().clone()).unwrap_or_else(|| {
        Rc::new(Fleet {
            version: 0,
            catalog_version: 0,
            node_pools: Vec::new(),
            running: Vec::new(),
            savings_plans: Vec::new(),
            reserved_instances: Vec::new(),
            capacity_reservations: Vec::new(),
            recent: Vec::new(),
        })
    })
}

#[cfg(feature = "fleet")]
pub use nodewright::policy::host::{OfferingPricePoint, PricePoint};

/// How the price of catalog offering `offering` moved: its price each time
/// it changed, oldest first, the current one last (at most 64). It changes
/// only with the catalog version: keep an answer until the next catalog.
/// Only inside `rank` and `plan`. Contract 0.3.0 (`fleet` feature).
#[cfg(feature = "fleet")]
pub fn price_history(offering: u32) -> Result<Vec<PricePoint>, String> {
    nodewright::policy::host::price_history(offering)
}

/// [`price_history`] of each of `offerings` in one call: their points in
/// the order named, each offering's oldest first (at most as many
/// offerings as the catalog has). Reading every spot pool of a new catalog
/// this way costs one call instead of one per offering.
#[cfg(feature = "fleet")]
pub fn price_histories(offerings: &[u32]) -> Result<Vec<OfferingPricePoint>, String> {
    nodewright::policy::host::price_histories(offerings)
}

/// What an offering costs given the commitments (contract 0.3.0).
#[cfg(feature = "fleet")]
pub mod economics {
    use super::{CapacityType, Fleet, Offering};

    /// Dollars per hour one more node of `offering` adds to the bill now:
    /// nothing when a free Reserved Instance of its type or a free
    /// capacity reservation of its type and zone takes it; for on-demand,
    /// the part of its price the free headroom of the best Savings Plan
    /// does not cover; spot at its price.
    pub fn marginal_price(offering: &Offering, fleet: &Fleet) -> f64 {
        let price = offering.price_per_hour;
        if offering.capacity_type == CapacityType::Spot {
            return price;
        }
        let free = |r: &super::Reservation| r.used < r.count && r.instance_type == offering.instance_type;
        if offering.capacity_type == CapacityType::Reserved {
            return if fleet.capacity_reservations.iter().any(|r| free(r) && r.zone == offering.zone) { 0.0 } else { price };
        }
        if fleet.reserved_instances.iter().any(free) {
            return 0.0;
        }
        let mut best = price;
        for plan in &fleet.savings_plans {
            let Some(discount) = plan_discount(plan, &offering.family) else { continue };
            let headroom = (plan.hourly_commitment - plan.used_per_hour).max(0.0);
            if discount >= 1.0 || headroom <= 0.0 {
                continue;
            }
            // The plan pays `headroom` at its rate: that much list price is covered.
            let covered = headroom / (1.0 - discount);
            best = best.min((price - covered).max(0.0));
        }
        best
    }

    std::thread_local! {
        /// Marginal prices already computed, by catalog index (NaN: not
        /// yet), for one catalog version and state of the commitments.
        static MEMO: std::cell::RefCell<(u64, u64, Vec<f64>)> = const { std::cell::RefCell::new((u64::MAX, u64::MAX, Vec::new())) };
        /// The commitments key of the last fleet version seen.
        static KEY: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
    }

    /// What a marginal price depends on in `fleet` (its commitments and how
    /// much of them is used), as a hash: the running counts, which change
    /// at every launch, are left out.
    fn commitments_key(fleet: &Fleet) -> u64 {
        use std::hash::{Hash, Hasher};
        if let Some((version, key)) = KEY.get()
            && version == fleet.version
        {
            return key;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for plan in &fleet.savings_plans {
            (plan.hourly_commitment.to_bits(), plan.used_per_hour.to_bits(), plan.discount.to_bits()).hash(&mut h);
            plan.family_discounts.iter().for_each(|(f, d)| (f, d.to_bits()).hash(&mut h));
        }
        for (kind, list) in [(0u8, &fleet.reserved_instances), (1, &fleet.capacity_reservations)] {
            kind.hash(&mut h);
            list.iter().for_each(|r| (&r.instance_type, &r.zone, r.count, r.used).hash(&mut h));
        }
        let key = h.finish();
        KEY.set(Some((fleet.version, key)));
        key
    }

    /// [`marginal_price`] of catalog offering `index`, computed once per
    /// catalog version and state of the commitments: a launch that uses no
    /// commitment (spot, or past them) costs a lookup per offering. To
    /// price many offerings, [`prices`] takes the memo once.
    pub fn marginal_price_at(index: u32, offering: &Offering, catalog_version: u64, fleet: &Fleet) -> f64 {
        prices(catalog_version, fleet).of(index, offering)
    }

    /// Marginal prices of catalog offerings under `fleet` for catalog
    /// `catalog_version`, remembered as [`marginal_price_at`] remembers
    /// them; the memo is held until this is dropped. Without commitments
    /// every offering costs its price, read from the packed [`Columns`].
    pub fn prices(catalog_version: u64, fleet: &Fleet) -> Prices<'_> {
        let plain = fleet.savings_plans.is_empty() && fleet.reserved_instances.is_empty() && fleet.capacity_reservations.is_empty();
        let key = if plain { 0 } else { commitments_key(fleet) };
        let (version, held_key, mut memo) = MEMO.with(|m| std::mem::take(&mut *m.borrow_mut()));
        if version != catalog_version || held_key != key {
            memo.clear();
        }
        let columns = super::columns();
        let catalog = if plain { None } else { super::held_catalog().filter(|c| c.version == catalog_version) };
        Prices { memo, catalog_version, key, plain, fleet, columns, catalog }
    }

    /// See [`prices`].
    pub struct Prices<'f> {
        memo: Vec<f64>,
        catalog_version: u64,
        key: u64,
        /// No commitments: every offering costs its price.
        plain: bool,
        fleet: &'f Fleet,
        columns: std::rc::Rc<super::Columns>,
        catalog: Option<std::rc::Rc<super::Catalog>>,
    }

    impl Prices<'_> {
        /// [`marginal_price`] of catalog offering `index`.
        pub fn of(&mut self, index: u32, offering: &Offering) -> f64 {
            if self.plain {
                return offering.price_per_hour;
            }
            self.memoised(index, |_| Some(marginal_price(offering, self.fleet))).unwrap_or(offering.price_per_hour)
        }

        /// Every offering's marginal price by catalog index, when each is
        /// its list price (no commitments): a loop over many offerings
        /// reads this slice instead of calling [`Prices::at`] per offering.
        pub fn dense(&self) -> Option<&[f64]> {
            (self.plain && self.columns.version == self.catalog_version).then_some(&self.columns.price_per_hour[..])
        }

        /// [`marginal_price`] of catalog offering `index` of the catalog
        /// held; `f64::MAX` past its end (never preferred).
        pub fn at(&mut self, index: u32) -> f64 {
            if self.plain && self.columns.version == self.catalog_version {
                return self.columns.price(index);
            }
            match self.memo.get(index as usize) {
                Some(&p) if !p.is_nan() => p,
                _ => self.first_at(index),
            }
        }

        /// [`Prices::at`] of an offering not in the memo yet: kept out of
        /// line, so a loop over many offerings stays small enough for the
        /// host's compiler to keep its values in registers.
        #[cold]
        #[inline(never)]
        fn first_at(&mut self, index: u32) -> f64 {
            let (fleet, catalog) = (self.fleet, self.catalog.clone());
            let price = |i: usize| catalog.as_ref().and_then(|c| c.offerings.get(i)).map(|o| marginal_price(o, fleet));
            self.memoised(index, price).unwrap_or(f64::MAX)
        }

        fn memoised(&mut self, index: u32, price: impl FnOnce(usize) -> Option<f64>) -> Option<f64> {
            let i = index as usize;
            if let Some(&p) = self.memo.get(i).filter(|p| !p.is_nan()) {
                return Some(p);
            }
            let p = price(i)?;
            if self.memo.len() <= i {
                self.memo.resize(i + 1, f64::NAN);
            }
            self.memo[i] = p;
            Some(p)
        }
    }

    impl Drop for Prices<'_> {
        fn drop(&mut self) {
            MEMO.with(|m| *m.borrow_mut() = (self.catalog_version, self.key, std::mem::take(&mut self.memo)));
        }
    }

    /// The fraction `plan` takes off `family`, if it covers it.
    pub fn plan_discount(plan: &super::SavingsPlan, family: &str) -> Option<f64> {
        if plan.family_discounts.is_empty() {
            Some(plan.discount)
        } else {
            plan.family_discounts.iter().find(|(f, _)| f == family).map(|(_, d)| *d)
        }
    }

    /// The index [`Fleet::counts`] names NodePool `name` by (none when no
    /// node of it runs).
    pub fn node_pool_index(fleet: &Fleet, name: &str) -> Option<u32> {
        fleet.node_pools.iter().position(|p| p == name).and_then(|i| u32::try_from(i).ok())
    }

    /// Nodes of `node_pool` bought as `offering`, and of the NodePool.
    pub fn pool_share(fleet: &Fleet, node_pool: &str, offering: u32) -> (u32, u32) {
        let mut of = 0u32;
        let mut all = 0u32;
        let Some(pool) = node_pool_index(fleet, node_pool) else { return (0, 0) };
        for c in fleet.counts().filter(|c| c.node_pool == pool) {
            all = all.saturating_add(c.count);
            if c.offering == offering {
                of = of.saturating_add(c.count);
            }
        }
        (of, all)
    }
}

/// Score every feasible offering of `request` with `score`; `None` leaves an
/// offering out. The result keeps the request's order.
#[cfg(feature = "selector")]
pub fn score_each(
    request: &SelectionRequest,
    catalog: &Catalog,
    mut score: impl FnMut(&Offering) -> Option<f64>,
) -> Ranking {
    score_each_indexed(request, catalog, |_, offering| score(offering))
}

/// Score every feasible offering of `request` by its catalog index, all
/// kept in request order: the fastest form when scores come from
/// [`Columns`] or [`economics::Prices::at`] (nothing is filtered, and the
/// host checks an answer naming exactly the feasible offerings at once).
///
/// `scores[k]` is the score of `request.feasible[k]`; `offerings` is left
/// empty, and the request's own feasible list takes its place when the
/// ranking is returned to the host (no copy of it is made).
#[cfg(feature = "selector")]
pub fn score_feasible(request: &SelectionRequest, mut score: impl FnMut(u32) -> f64) -> Ranking {
    Ranking { offerings: Vec::new(), scores: request.feasible.iter().map(|&i| score(i)).collect() }
}

/// [`score_feasible`] where each offering's score is `scores[index]`, a
/// table by catalog index kept for the catalog version (`f64::MAX` past
/// its end): the fastest form of all.
#[cfg(feature = "selector")]
pub fn score_feasible_from(request: &SelectionRequest, scores: &[f64]) -> Ranking {
    Ranking { offerings: Vec::new(), scores: gather(&request.feasible, scores) }
}

/// The ranking returned for a request whose feasible list is `feasible`:
/// one with no offerings and a score per feasible offering (what
/// [`score_feasible`] makes) names them all, in request order.
#[cfg(feature = "selector")]
#[doc(hidden)]
pub fn __all_feasible(mut ranking: Ranking, feasible: Vec<u32>) -> Ranking {
    if ranking.offerings.is_empty() && ranking.scores.len() == feasible.len() {
        ranking.offerings = feasible;
    }
    ranking
}

/// Scores by catalog index kept while the catalog and the fleet stay the
/// same versions (NaN: not computed yet), for a score that depends on
/// nothing else: calls naming the same fleet then read one value per
/// offering. Hold one in a `thread_local!` (contract 0.3.0).
#[cfg(all(feature = "selector", feature = "fleet"))]
#[derive(Default)]
pub struct KeptScores {
    versions: (u64, u64),
    scores: Vec<f64>,
}

#[cfg(all(feature = "selector", feature = "fleet"))]
impl KeptScores {
    /// Every feasible offering of `request` (over `catalog`) scored by
    /// `score`, computed only for offerings not kept for these versions.
    pub fn rank(&mut self, request: &SelectionRequest, catalog: &Catalog, mut score: impl FnMut(u32) -> f64) -> Ranking {
        let versions = (catalog.version, request.fleet_version);
        if self.versions != versions {
            self.versions = versions;
            self.scores.clear();
        }
        self.scores.resize(catalog.offerings.len(), f64::NAN);
        let kept = &mut self.scores;
        score_feasible(request, |i| match kept.get_mut(i as usize) {
            Some(s) if !s.is_nan() => *s,
            Some(s) => {
                *s = score(i);
                *s
            }
            None => score(i),
        })
    }
}

/// `values[i]` for each `i` of `indices`. A function of its own, so the
/// compiler of the host keeps the loop's few values in registers (inlined
/// into a plugin's whole `rank`, it spills them to the stack).
/// Written in place four at a time: the compiler of the host checks the
/// interruption epoch once per loop iteration, and keeps loops as written.
#[cfg(feature = "selector")]
#[inline(never)]
fn gather(indices: &[u32], values: &[f64]) -> Vec<f64> {
    let at = |i: u32| values.get(i as usize).copied().unwrap_or(f64::MAX);
    let mut out = vec![0.0; indices.len()];
    let mut to = out.chunks_exact_mut(4);
    let mut from = indices.chunks_exact(4);
    for (o, i) in (&mut to).zip(&mut from) {
        o[0] = at(i[0]);
        o[1] = at(i[1]);
        o[2] = at(i[2]);
        o[3] = at(i[3]);
    }
    for (o, &i) in to.into_remainder().iter_mut().zip(from.remainder()) {
        *o = at(i);
    }
    out
}

/// [`score_each`], with each offering's catalog index.
#[cfg(feature = "selector")]
pub fn score_each_indexed(
    request: &SelectionRequest,
    catalog: &Catalog,
    mut score: impl FnMut(u32, &Offering) -> Option<f64>,
) -> Ranking {
    let mut offerings = Vec::with_capacity(request.feasible.len());
    let mut scores = Vec::with_capacity(request.feasible.len());
    for &index in &request.feasible {
        if let Some(offering) = catalog.offerings.get(index as usize)
            && let Some(s) = score(index, offering)
        {
            offerings.push(index);
            scores.push(s);
        }
    }
    Ranking { offerings, scores }
}

/// Write `message` to the host's log at `level`.
pub fn log(level: Level, message: &str) {
    nodewright::policy::host::log(level, message);
}

/// Which pods (indices into `pods`) would not fit on a new, empty node bought
/// as catalog offering `offering`; empty when all fit. Contract 0.2.0
/// (`what-if` feature).
#[cfg(feature = "what-if")]
pub fn pods_not_fitting_offering(pods: &[Resources], offering: u32) -> Result<Vec<u32>, String> {
    nodewright::policy::host::what_if(pods, &nodewright::policy::host::FitTarget::Offering(offering))
}

/// Which pods would not fit on these nodes of the snapshot being planned
/// (with what they already run); empty when all fit. Only inside `plan`.
/// Contract 0.2.0 (`what-if` feature).
#[cfg(feature = "what-if")]
pub fn pods_not_fitting_nodes(pods: &[Resources], nodes: &[u32]) -> Result<Vec<u32>, String> {
    nodewright::policy::host::what_if(pods, &nodewright::policy::host::FitTarget::Nodes(nodes.to_vec()))
}

/// Helpers for consolidators that ask the host's `what-if` (contract 0.2.0).
#[cfg(all(feature = "consolidator", feature = "what-if"))]
pub mod consolidate {
    use super::{Catalog, Node, Requests, Resources, Snapshot};

    /// Hours in an average month, for $/month figures.
    pub const HOURS_PER_MONTH: f64 = 730.0;

    /// The node's price per hour.
    pub fn price(node: &Node, catalog: &Catalog) -> f64 {
        catalog.offerings.get(node.offering as usize).map_or(0.0, |o| o.price_per_hour)
    }

    /// Requested / allocatable of the node's busiest resource (CPU or memory), 0 to 1.
    pub fn utilisation(node: &Node, catalog: &Catalog) -> f64 {
        let Some(offering) = catalog.offerings.get(node.offering as usize) else { return 1.0 };
        let cpu: u64 = node.pods.iter().map(|p| u64::from(p.requests().cpu_millis)).sum();
        let memory: u64 = node.pods.iter().map(|p| p.requests().memory_bytes).sum();
        let ratio = |used: u64, total: u64| if total == 0 { 1.0 } else { used as f64 / total as f64 };
        ratio(cpu, u64::from(offering.allocatable.cpu_millis)).max(ratio(memory, offering.allocatable.memory_bytes))
    }

    /// The pods of the snapshot nodes `nodes`.
    pub fn pods_of(snapshot: &Snapshot, nodes: &[usize]) -> Vec<Resources> {
        nodes.iter().flat_map(|&i| snapshot.nodes[i].pods.iter().map(Requests::requests)).collect()
    }

    /// Do the pods of `nodes` fit on the other nodes of the snapshot?
    pub fn fits_elsewhere(snapshot: &Snapshot, nodes: &[usize]) -> Result<bool, String> {
        let pods = pods_of(snapshot, nodes);
        if pods.is_empty() {
            return Ok(true);
        }
        let others: Vec<u32> = (0..snapshot.nodes.len()).filter(|i| !nodes.contains(i)).map(|i| i as u32).collect();
        Ok(!others.is_empty() && super::pods_not_fitting_nodes(&pods, &others)?.is_empty())
    }

    /// The cheapest replacement offering that holds every pod of `nodes` and
    /// costs less than `below` per hour. Tries the cheapest offerings first
    /// and asks the host at most `max_queries` times.
    pub fn cheapest_replacement(
        snapshot: &Snapshot,
        catalog: &Catalog,
        nodes: &[usize],
        below: f64,
        max_queries: usize,
    ) -> Result<Option<u32>, String> {
        let pods = pods_of(snapshot, nodes);
        let cpu: u64 = pods.iter().map(|p| u64::from(p.cpu_millis)).sum();
        let memory: u64 = pods.iter().map(|p| p.memory_bytes).sum();
        let gpus: u32 = pods.iter().map(|p| p.gpus).sum();
        let holds = |o: &super::Offering| {
            u64::from(o.allocatable.cpu_millis) >= cpu
                && o.allocatable.memory_bytes >= memory
                && o.allocatable.gpus >= gpus
                && o.allocatable.pods as usize >= pods.len()
        };
        let by_price = replacements_by_price(snapshot, catalog);
        let mut asked = 0;
        for &option in by_price.iter() {
            if asked == max_queries {
                break;
            }
            let offering = &catalog.offerings[option as usize];
            match offering.price_per_hour.partial_cmp(&below) {
                Some(std::cmp::Ordering::Less) => {}
                // Cheapest first: none after costs less.
                Some(_) => break,
                // A NaN price is below nothing.
                None => continue,
            }
            if !holds(offering) {
                continue;
            }
            asked += 1;
            if super::pods_not_fitting_offering(&pods, option)?.is_empty() {
                return Ok(Some(option));
            }
        }
        Ok(None)
    }

    /// The snapshot's replacement offerings (those in the catalog),
    /// cheapest first, ties by index: the catalog's own order (sorted once
    /// when it was handed over) filtered to the list, once per plan call
    /// for the snapshot the host handed to it.
    fn replacements_by_price(snapshot: &Snapshot, catalog: &Catalog) -> std::rc::Rc<[u32]> {
        let list = || -> std::rc::Rc<[u32]> {
            let columns = super::columns();
            let len = catalog.offerings.len();
            if columns.version == catalog.version && columns.price_per_hour.len() == len {
                let mut listed = vec![false; len];
                for &o in &snapshot.replacements {
                    if let Some(listed) = listed.get_mut(o as usize) {
                        *listed = true;
                    }
                }
                columns.by_price().iter().copied().filter(|&o| listed[o as usize]).collect()
            } else {
                // A catalog other than the one held: sorted here.
                let mut by_price: Vec<u32> = snapshot.replacements.iter().copied().filter(|&o| (o as usize) < len).collect();
                let price = |i: u32| catalog.offerings[i as usize].price_per_hour;
                by_price.sort_by(|&a, &b| price(a).total_cmp(&price(b)).then(a.cmp(&b)));
                by_price.dedup();
                by_price.into()
            }
        };
        if !super::planning(snapshot) {
            return list();
        }
        super::PLAN_MEMO.with_borrow_mut(|memo| match memo {
            Some((version, sorted)) if *version == catalog.version => sorted.clone(),
            _ => memo.insert((catalog.version, list())).1.clone(),
        })
    }
}

/// The JSON configured for this plugin (`{}` when none was given).
pub fn config_json() -> String {
    nodewright::policy::host::config()
}

/// Parse the plugin's configuration into `T`; an empty object gives `T`'s
/// serde defaults. Parse once and keep the result: the JSON does not change
/// while an instance lives.
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, String> {
    serde_json::from_str(&config_json()).map_err(|e| format!("invalid plugin config: {e}"))
}

#[doc(hidden)]
pub use serde_json as __serde_json;

#[cfg(feature = "selector")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_selection {
    ($t:ident) => {
        impl $crate::exports::nodewright::policy::instance_selection::Guest for $t {
            fn rank(mut request: $crate::SelectionRequest) -> Result<$crate::Ranking, String> {
                $crate::__keep_fleet!(request);
                let ranking = $crate::__with_catalog(request.catalog_version, |catalog| {
                    $crate::__check_fleet!(request, <$t as $crate::Selector>::rank(&request, catalog))
                })?;
                Ok($crate::__all_feasible(ranking, request.feasible))
            }
        }
    };
}

#[cfg(not(feature = "selector"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_selection {
    ($t:ident) => {};
}

#[cfg(feature = "consolidator")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_consolidation {
    ($t:ident) => {
        impl $crate::exports::nodewright::policy::consolidation::Guest for $t {
            fn plan(mut snapshot: $crate::Snapshot) -> Result<Vec<$crate::Action>, String> {
                $crate::__keep_fleet!(snapshot);
                $crate::__planning(&snapshot, || {
                    $crate::__with_catalog(snapshot.catalog_version, |catalog| {
                        $crate::__check_fleet!(snapshot, <$t as $crate::Consolidator>::plan(&snapshot, catalog))
                    })
                })
            }
        }
    };
}

#[cfg(not(feature = "consolidator"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_consolidation {
    ($t:ident) => {};
}

#[cfg(feature = "fleet")]
#[doc(hidden)]
#[macro_export]
macro_rules! __check_fleet {
    ($request:ident, $call:expr) => {
        $crate::__check_fleet($request.fleet_version, || $call)
    };
}

#[cfg(not(feature = "fleet"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __check_fleet {
    ($request:ident, $call:expr) => {
        $call
    };
}

#[cfg(feature = "fleet")]
#[doc(hidden)]
#[macro_export]
macro_rules! __keep_fleet {
    ($request:ident) => {
        if let Some(fleet) = $request.fleet.take() {
            $crate::__set_fleet(fleet);
        }
    };
}

#[cfg(not(feature = "fleet"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __keep_fleet {
    ($request:ident) => {
        let _ = &mut $request;
    };
}

/// Export `$t` as the plugin of this component. `$t` implements
/// [`Selector`], [`Consolidator`] or both, matching the crate features.
#[macro_export]
macro_rules! export {
    ($t:ident) => {
        impl $crate::exports::nodewright::policy::catalog::Guest for $t {
            fn set_catalog(catalog: $crate::Catalog) -> Result<(), String> {
                $crate::__set_catalog(catalog)
            }
        }
        $crate::__export_selection!($t);
        $crate::__export_consolidation!($t);
        $crate::__export_world!($t with_types_in $crate);
    };
}
