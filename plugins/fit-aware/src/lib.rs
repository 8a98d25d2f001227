//! `fit-aware` (contract 0.2.0): delete the emptiest disruptable node whose
//! pods the host's own scheduler says fit on the remaining nodes; one node
//! per plan, so every step is re-checked against a fresh snapshot.

use nodewright_plugin::{Action, Catalog, Consolidator, Snapshot, pods_not_fitting_nodes};

struct FitAware;

impl Consolidator for FitAware {
    fn plan(snapshot: &Snapshot, _catalog: &Catalog) -> Result<Vec<Action>, String> {
        let mut candidates: Vec<usize> = (0..snapshot.nodes.len()).filter(|&i| snapshot.nodes[i].disruptable).collect();
        candidates.sort_by_key(|&i| (snapshot.nodes[i].pods.len(), i));
        for candidate in candidates {
            let others: Vec<u32> = (0..snapshot.nodes.len() as u32).filter(|&i| i as usize != candidate).collect();
            let pods = &snapshot.nodes[candidate].pods;
            if pods.is_empty() || pods_not_fitting_nodes(pods, &others)?.is_empty() {
                return Ok(vec![Action::Delete(vec![candidate as u32])]);
            }
        }
        Ok(Vec::new())
    }
}

nodewright_plugin::export!(FitAware);
