//! Plain data: resources, instance types, offerings, the catalog, pods,
//! labels and requirements, NodePools. No I/O beyond parsing text handed in.

mod catalog;
mod commitments;
pub mod clock;
pub mod labels;
mod node;
mod nodepool;
mod offering;
mod overrides;
mod pdb;
pub mod k8s;
mod kubelet;
mod pod;
pub mod quantity;
mod resources;
pub mod stream;

pub use clock::{Clock, system_clock};
pub use commitments::{
    CapacityReservation, Commitments, CommitmentsError, Discount, MAX_HOURLY_DOLLARS, MAX_RESERVED_COUNT, ReservedInstances, SavingsPlan, parse_commitments,
};
pub use catalog::{Catalog, CatalogError, Fit, InstanceType, KubeletConfig, Reserved, ZONES, bundled_instance_types, is_spot_twin, parse_instance_types};
pub use kubelet::KubeletSpec;
pub use labels::{Operator, Requirement, Taint, TaintEffect, Toleration, well_known};
pub use nodepool::yaml_error;
pub use node::{ClaimConditions, ExistingNode, Instance, NodeClaim};
pub use nodepool::{
    Budget, BudgetNodes, ConsolidationPolicy, MinValues, NodePool, NodePoolError, NodePoolFile, PolicyRef, PoolLimits, parse_node_pool_file, parse_node_pools, parse_node_pools_noting,
};
pub use offering::{Arch, CapacityType, InterruptionRate, Offering};
pub use overrides::{OverrideTarget, PriceChange, PriceOverride, PriceOverrideError, parse_price_overrides};
pub use pdb::{IntOrPercent, PdbLimit, PdbStatus, PodDisruptionBudget};
pub use pod::{daemonsets_on, BoundPods, LabelSelector, Pod, PodAffinityTerm, PodSpec, PreferredTerm, TopologyKey, TopologySpread};
pub use resources::Resources;
