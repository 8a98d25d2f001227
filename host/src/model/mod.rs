//! Plain data: resources, instance types, offerings and the catalog. No I/O
//! beyond parsing text handed in.

mod catalog;
mod offering;
mod resources;

pub use catalog::{Catalog, CatalogError, InstanceType, ZONES, bundled_instance_types, parse_instance_types};
pub use offering::{Arch, CapacityType, InterruptionRate, Offering};
pub use resources::Resources;
