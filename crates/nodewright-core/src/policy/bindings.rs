//! Host bindings generated from `wit/`, one module per supported contract
//! version, and the glue that lets the rest of the runtime call any of them
//! the same way. A later version goes beside these, so old plugins keep
//! working.

/// `nodewright:policy@0.1.0`.
pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1.0",
        world: "policy",
        exports: { default: async },
    });

    pub use self::exports::nodewright::policy::{catalog, consolidation, instance_selection};
    pub use self::nodewright::policy::{host, types};
}

/// `nodewright:policy@0.2.0`: 0.1.0 plus the host's `what-if` query.
pub mod v0_2_0 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.2.0",
        world: "policy",
        exports: { default: async },
    });

    pub use self::exports::nodewright::policy::{catalog, consolidation, instance_selection};
    pub use self::nodewright::policy::{host, types};
}

/// `nodewright:policy@0.3.0`: 0.2.0 plus the fleet, the commitments and
/// richer pods.
pub mod v0_3_0 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.3.0",
        world: "policy",
        exports: { default: async },
    });

    pub use self::exports::nodewright::policy::{catalog, consolidation, instance_selection};
    pub use self::nodewright::policy::{host, types};
}

/// The same glue for every version module: export lookup, the catalog in
/// contract form, and calls taking and returning host types. The versions
/// share the shape of these types, not the Rust types, so the code is
/// written once and expanded per version.
macro_rules! contract_glue {
    ($version:ident, $calls:ident) => {
        pub(crate) mod $version {
            use std::sync::{Arc, Mutex};

            use wasmtime::Store;
            use wasmtime::component::{Instance, InstancePre};

            use crate::model::{Arch, CapacityType, Catalog, InterruptionRate, Resources};
            use crate::policy::bindings::$version as b;
            use crate::policy::request::{ConsolidationAction, ConsolidationSnapshot, SelectionRequest};
            use crate::policy::sandbox::PluginState;

            /// Export indices, looked up once per component.
            pub(crate) struct Indices {
                catalog: b::catalog::GuestIndices,
                selection: Option<b::instance_selection::GuestIndices>,
                consolidation: Option<b::consolidation::GuestIndices>,
                /// The catalog in contract form, converted once per version.
                converted: Mutex<Option<Arc<b::types::Catalog>>>,
            }

            /// The typed exports of one instance.
            pub(crate) struct Exports {
                catalog: b::catalog::Guest,
                selection: Option<b::instance_selection::Guest>,
                consolidation: Option<b::consolidation::Guest>,
            }

            impl Indices {
                pub(crate) fn new(pre: &InstancePre<PluginState>, selects: bool, consolidates: bool) -> wasmtime::Result<Self> {
                    Ok(Indices {
                        catalog: b::catalog::GuestIndices::new(pre)?,
                        selection: selects.then(|| b::instance_selection::GuestIndices::new(pre)).transpose()?,
                        consolidation: consolidates.then(|| b::consolidation::GuestIndices::new(pre)).transpose()?,
                        converted: Mutex::new(None),
                    })
                }

                pub(crate) fn load(&self, store: &mut Store<PluginState>, instance: &Instance) -> wasmtime::Result<Exports> {
                    Ok(Exports {
                        catalog: self.catalog.load(&mut *store, instance)?,
                        selection: self.selection.as_ref().map(|s| s.load(&mut *store, instance)).transpose()?,
                        consolidation: self.consolidation.as_ref().map(|c| c.load(&mut *store, instance)).transpose()?,
                    })
                }

                /// `catalog` in contract form (converted once per version).
                pub(crate) fn catalog(&self, catalog: &Catalog) -> Arc<b::types::Catalog> {
                    let mut cached = self.converted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if let Some(c) = cached.as_ref().filter(|c| c.version == catalog.version) {
                        return c.clone();
                    }
                    let converted = Arc::new(to_catalog(catalog));
                    *cached = Some(converted.clone());
                    converted
                }
            }

            impl Exports {
                fn selection(&self) -> wasmtime::Result<&b::instance_selection::Guest> {
                    self.selection.as_ref().ok_or_else(|| wasmtime::format_err!("the plugin does not export instance-selection"))
                }

                fn consolidation(&self) -> wasmtime::Result<&b::consolidation::Guest> {
                    self.consolidation.as_ref().ok_or_else(|| wasmtime::format_err!("the plugin does not export consolidation"))
                }

                pub(crate) async fn set_catalog(
                    &self,
                    store: &mut Store<PluginState>,
                    catalog: &b::types::Catalog,
                ) -> wasmtime::Result<Result<(), String>> {
                    self.catalog.call_set_catalog(store, catalog).await
                }
            }

            $calls!();

            /// A plan in host form (the action shape is the same in every version).
            fn to_actions(actions: Vec<b::consolidation::Action>) -> Vec<ConsolidationAction> {
                actions
                    .into_iter()
                    .map(|a| match a {
                        b::consolidation::Action::Delete(nodes) => ConsolidationAction::Delete { nodes },
                        b::consolidation::Action::Replace(r) => ConsolidationAction::Replace { nodes: r.nodes, offering: r.offering },
                    })
                    .collect()
            }

            pub(crate) fn to_resources(r: &Resources) -> b::types::Resources {
                b::types::Resources { cpu_millis: r.cpu_millis, memory_bytes: r.memory_bytes, pods: r.pods, gpus: r.gpus }
            }

            #[allow(dead_code, reason = "only versions with `what-if` read resources back")]
            pub(crate) fn from_resources(r: &b::types::Resources) -> Resources {
                Resources { cpu_millis: r.cpu_millis, memory_bytes: r.memory_bytes, pods: r.pods, gpus: r.gpus, ephemeral_bytes: 0 }
            }

            pub(crate) fn to_catalog(catalog: &Catalog) -> b::types::Catalog {
                use b::types as t;
                t::Catalog {
                    version: catalog.version,
                    offerings: catalog
                        .offerings
                        .iter()
                        .map(|o| t::Offering {
                            instance_type: o.instance_type.clone(),
                            family: o.family.clone(),
                            generation: o.generation,
                            arch: match o.arch {
                                Arch::Amd64 => t::Arch::Amd64,
                                Arch::Arm64 => t::Arch::Arm64,
                            },
                            zone: o.zone.clone(),
                            capacity_type: match o.capacity_type {
                                CapacityType::OnDemand => t::CapacityType::OnDemand,
                                CapacityType::Spot => t::CapacityType::Spot,
                                CapacityType::Reserved => t::CapacityType::Reserved,
                            },
                            price_per_hour: o.price_per_hour,
                            allocatable: to_resources(&o.allocatable),
                            interruption: match o.interruption {
                                InterruptionRate::VeryLow => t::InterruptionRate::VeryLow,
                                InterruptionRate::Low => t::InterruptionRate::Low,
                                InterruptionRate::Medium => t::InterruptionRate::Medium,
                                InterruptionRate::High => t::InterruptionRate::High,
                                InterruptionRate::VeryHigh => t::InterruptionRate::VeryHigh,
                            },
                        })
                        .collect(),
                }
            }

            /// A log level of this version, as `tracing` sees it.
            pub(crate) fn level(level: b::host::Level) -> tracing::Level {
                match level {
                    b::host::Level::Trace => tracing::Level::TRACE,
                    b::host::Level::Debug => tracing::Level::DEBUG,
                    b::host::Level::Info => tracing::Level::INFO,
                    b::host::Level::Warn => tracing::Level::WARN,
                    b::host::Level::Error => tracing::Level::ERROR,
                }
            }
        }
    };
}

/// `rank` and `plan` of the versions whose pods are their requests (0.1.0, 0.2.0).
macro_rules! classic_calls {
    () => {
        impl Exports {
            pub(crate) async fn rank(
                &self,
                store: &mut Store<PluginState>,
                catalog_version: u64,
                request: &mut SelectionRequest,
            ) -> wasmtime::Result<Result<(Vec<u32>, Vec<f64>), String>> {
                let selection = self.selection()?;
                let wit = b::instance_selection::SelectionRequest {
                    node_pool: std::mem::take(&mut request.node_pool),
                    catalog_version,
                    pods: request.pods.iter().map(to_resources).collect(),
                    total: to_resources(&request.total),
                    feasible: std::mem::take(&mut request.feasible),
                };
                Ok(selection.call_rank(store, &wit).await?.map(|r| (r.offerings, r.scores)))
            }

            pub(crate) async fn plan(
                &self,
                store: &mut Store<PluginState>,
                catalog_version: u64,
                snapshot: &ConsolidationSnapshot,
            ) -> wasmtime::Result<Result<Vec<ConsolidationAction>, String>> {
                let consolidation = self.consolidation()?;
                let wit = b::consolidation::Snapshot {
                    node_pool: snapshot.node_pool.clone(),
                    catalog_version,
                    nodes: snapshot
                        .nodes
                        .iter()
                        .map(|n| b::consolidation::Node {
                            name: n.name.clone(),
                            offering: n.offering,
                            age_seconds: n.age_seconds,
                            pods: n.pods.iter().map(to_resources).collect(),
                            disruptable: n.disruptable,
                        })
                        .collect(),
                    replacements: snapshot.replacements.clone(),
                };
                Ok(consolidation.call_plan(store, &wit).await?.map(to_actions))
            }
        }
    };
}

/// `rank`, `plan` and the fleet hand-over of 0.3.0.
macro_rules! fleet_calls {
    () => {
        use crate::policy::fleet::{Fleet, PodFacts, ReservationUse};

        pub(crate) fn to_fleet(fleet: &Fleet) -> b::types::Fleet {
            use b::types as t;
            let reservation = |r: &ReservationUse| t::Reservation {
                instance_type: r.instance_type.clone(),
                zone: r.zone.clone(),
                count: r.count,
                used: r.used,
                hourly_rate: r.hourly_rate,
            };
            // Each NodePool's name once, referred to by index; the counts
            // as flat (NodePool, offering, nodes) triples.
            let mut node_pools: Vec<String> = Vec::new();
            let mut running = Vec::with_capacity(fleet.running.len().saturating_mul(3));
            for c in &fleet.running {
                let index = node_pools.iter().position(|p| **p == *c.node_pool).unwrap_or_else(|| {
                    node_pools.push(c.node_pool.to_string());
                    node_pools.len() - 1
                });
                running.extend([u32::try_from(index).unwrap_or(u32::MAX), c.offering, c.count]);
            }
            t::Fleet {
                version: fleet.version,
                catalog_version: fleet.catalog_version,
                node_pools,
                running,
                savings_plans: fleet
                    .savings_plans
                    .iter()
                    .map(|p| t::SavingsPlan {
                        hourly_commitment: p.hourly_commitment,
                        used_per_hour: p.used_per_hour,
                        discount: p.discount,
                        family_discounts: p.family_discounts.clone(),
                    })
                    .collect(),
                reserved_instances: fleet.reserved_instances.iter().map(reservation).collect(),
                capacity_reservations: fleet.capacity_reservations.iter().map(reservation).collect(),
                recent: fleet
                    .recent
                    .iter()
                    .map(|h| t::PoolHistory { offering: h.offering, launch_failures: h.launch_failures, interruptions: h.interruptions })
                    .collect(),
            }
        }

        /// A call's pods in contract form: each string once in `strings`,
        /// the pods and their labels and annotations referring to it by index.
        #[derive(Default)]
        pub(crate) struct PodTable<'a> {
            index: rustc_hash::FxHashMap<&'a str, u32>,
            pub(crate) strings: Vec<String>,
            pub(crate) labels: Vec<b::types::PodTag>,
            pub(crate) annotations: Vec<b::types::PodTag>,
            pods: u32,
        }

        impl<'a> PodTable<'a> {
            fn text(&mut self, text: &'a str) -> u32 {
                let next = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
                *self.index.entry(text).or_insert_with(|| {
                    self.strings.push(text.to_string());
                    next
                })
            }

            /// The next pod: `requests`, with `facts` (default facts when none).
            pub(crate) fn pod(&mut self, requests: &Resources, facts: Option<&'a PodFacts>) -> b::types::Pod {
                static NONE: std::sync::LazyLock<PodFacts> = std::sync::LazyLock::new(PodFacts::default);
                let f: &'a PodFacts = facts.unwrap_or(&NONE);
                let pod = self.pods;
                self.pods = self.pods.saturating_add(1);
                for (k, v) in &f.labels {
                    let tag = b::types::PodTag { pod, key: self.text(k), value: self.text(v) };
                    self.labels.push(tag);
                }
                for (k, v) in &f.annotations {
                    let tag = b::types::PodTag { pod, key: self.text(k), value: self.text(v) };
                    self.annotations.push(tag);
                }
                b::types::Pod {
                    requests: to_resources(requests),
                    workload: self.text(&f.workload),
                    priority: f.priority,
                    deletion_cost: f.deletion_cost,
                    do_not_disrupt: f.do_not_disrupt,
                    tolerates_spot: f.tolerates_spot,
                    job: f.job,
                    running_seconds: f.running_seconds,
                    pdb_headroom: f.pdb_headroom,
                }
            }
        }

        impl Exports {
            /// `send_fleet`: the instance has not been handed the request's
            /// fleet version yet, so the fleet travels with the call.
            pub(crate) async fn rank(
                &self,
                store: &mut Store<PluginState>,
                catalog_version: u64,
                request: &mut SelectionRequest,
                send_fleet: bool,
            ) -> wasmtime::Result<Result<(Vec<u32>, Vec<f64>), String>> {
                let selection = self.selection()?;
                let (node_pool, feasible) = (std::mem::take(&mut request.node_pool), std::mem::take(&mut request.feasible));
                let request = &*request;
                let mut table = PodTable::default();
                let pods = request.pods.iter().enumerate().map(|(i, r)| table.pod(r, request.facts.get(i))).collect();
                let wit = b::instance_selection::SelectionRequest {
                    node_pool,
                    catalog_version,
                    fleet_version: request.fleet.version,
                    fleet: send_fleet.then(|| to_fleet(&request.fleet)),
                    pods,
                    strings: table.strings,
                    labels: table.labels,
                    annotations: table.annotations,
                    total: to_resources(&request.total),
                    feasible,
                    pending_pods: request.pending_pods,
                };
                Ok(selection.call_rank(store, &wit).await?.map(|r| (r.offerings, r.scores)))
            }

            pub(crate) async fn plan(
                &self,
                store: &mut Store<PluginState>,
                catalog_version: u64,
                snapshot: &ConsolidationSnapshot,
                send_fleet: bool,
            ) -> wasmtime::Result<Result<Vec<ConsolidationAction>, String>> {
                let consolidation = self.consolidation()?;
                let mut table = PodTable::default();
                let nodes = snapshot
                    .nodes
                    .iter()
                    .map(|n| b::consolidation::Node {
                        name: n.name.clone(),
                        offering: n.offering,
                        age_seconds: n.age_seconds,
                        pods: n.pods.iter().enumerate().map(|(i, r)| table.pod(r, n.facts.get(i))).collect(),
                        disruptable: n.disruptable,
                    })
                    .collect();
                let wit = b::consolidation::Snapshot {
                    node_pool: snapshot.node_pool.clone(),
                    catalog_version,
                    fleet_version: snapshot.fleet.version,
                    fleet: send_fleet.then(|| to_fleet(&snapshot.fleet)),
                    nodes,
                    strings: table.strings,
                    labels: table.labels,
                    annotations: table.annotations,
                    replacements: snapshot.replacements.clone(),
                    budget_left: snapshot.budget_left,
                    pending_pods: snapshot.pending_pods,
                };
                Ok(consolidation.call_plan(store, &wit).await?.map(to_actions))
            }
        }
    };
}

/// Glue for each supported version.
pub(crate) mod glue {
    contract_glue!(v0_1_0, classic_calls);
    contract_glue!(v0_2_0, classic_calls);
    contract_glue!(v0_3_0, fleet_calls);
}

#[cfg(test)]
mod tests {
    use super::glue::v0_3_0::PodTable;
    use super::v0_3_0::types::PodTag;
    use crate::model::Resources;
    use crate::policy::PodFacts;

    #[test]
    fn the_fleets_counts_travel_as_flat_triples_naming_each_node_pool_once() {
        use crate::policy::{Fleet, FleetCount};
        let count = |node_pool: &str, offering: u32, count: u32| FleetCount { node_pool: node_pool.into(), offering, count };
        let fleet = Fleet {
            version: 7,
            catalog_version: 3,
            running: vec![count("default", 1, 2), count("batch", 5, 1), count("default", 7, 3)],
            ..Fleet::default()
        };
        let wit = super::glue::v0_3_0::to_fleet(&fleet);
        assert_eq!((wit.version, wit.catalog_version), (7, 3));
        assert_eq!(wit.node_pools, ["default", "batch"]);
        assert_eq!(wit.running, [0, 1, 2, 1, 5, 1, 0, 7, 3]);
        assert_eq!(super::glue::v0_3_0::to_fleet(&Fleet::default()).running, Vec::<u32>::new());
    }

    #[test]
    fn a_calls_pods_carry_each_string_once_and_their_tags_by_pod_index() {
        let tagged = |workload: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]| PodFacts {
            workload: workload.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..PodFacts::default()
        };
        // Two nodes' pods, as a snapshot walks them: the third pod has no facts.
        let first = [tagged("web", &[("team", "growth")], &[]), tagged("web", &[("team", "growth")], &[("cost-centre", "cc-7")])];
        let second = [tagged("batch", &[("team", "web")], &[])];
        let mut table = PodTable::default();
        let requests = Resources::pod(100, 1 << 20);
        let mut pods: Vec<_> = first.iter().map(|f| table.pod(&requests, Some(f))).collect();
        pods.push(table.pod(&requests, None));
        pods.extend(second.iter().map(|f| table.pod(&requests, Some(f))));
        assert_eq!(table.strings, ["team", "growth", "web", "cost-centre", "cc-7", "", "batch"].map(String::from).to_vec());
        let text = |i: u32| table.strings[i as usize].as_str();
        assert_eq!(pods.iter().map(|p| text(p.workload)).collect::<Vec<_>>(), ["web", "web", "", "batch"]);
        let tags = |tags: &[PodTag]| tags.iter().map(|t| (t.pod, text(t.key), text(t.value))).collect::<Vec<_>>();
        assert_eq!(tags(&table.labels), [(0, "team", "growth"), (1, "team", "growth"), (3, "team", "web")]);
        assert_eq!(tags(&table.annotations), [(1, "cost-centre", "cc-7")]);
        assert_eq!(pods.iter().map(|p| p.requests.cpu_millis).collect::<Vec<_>>(), [100; 4]);
    }
}
