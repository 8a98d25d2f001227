//! `commitment-aware`: buy what is already paid for first.
//!
//! Contract 0.3.0. Each feasible offering is scored by what one more node
//! of it adds to the bill now ([`economics::marginal_price`]): nothing when
//! a free capacity reservation or Reserved Instance takes it; for
//! on-demand, the part of the price the free headroom of a Savings Plan
//! does not cover; spot at its price. Ties (several offerings the
//! commitments cover whole) go to the lower list price, which spends less
//! of the headroom. Every other feasible offering stays ranked, so a launch
//! that meets no capacity falls through to the next.
//!
//! Config: `{"list_price_weight": 0.001}` — how much of the list price is
//! added to the marginal price (the tie-break; 0 ignores list prices).

use std::sync::OnceLock;

use nodewright_plugin::{Catalog, KeptScores, Ranking, SelectionRequest, Selector, columns, economics, fleet, score_feasible_from};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    list_price_weight: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { list_price_weight: 0.001 }
    }
}

fn weight() -> Result<f64, String> {
    static WEIGHT: OnceLock<Result<f64, String>> = OnceLock::new();
    WEIGHT
        .get_or_init(|| {
            let config: Config = nodewright_plugin::config()?;
            if !(config.list_price_weight.is_finite() && (0.0..=1.0).contains(&config.list_price_weight)) {
                return Err(format!("invalid plugin config: list_price_weight {} must be between 0 and 1", config.list_price_weight));
            }
            Ok(config.list_price_weight)
        })
        .clone()
}

std::thread_local! {
    /// (catalog version, each offering's score at its list price).
    static LISTED: std::cell::RefCell<(u64, std::rc::Rc<[f64]>)> = std::cell::RefCell::new((0, std::rc::Rc::from([])));
}

std::thread_local! {
    /// Scores with the commitments of the fleet version last seen.
    static SCORED: std::cell::RefCell<KeptScores> = std::cell::RefCell::new(KeptScores::default());
}

struct CommitmentAware;

impl Selector for CommitmentAware {
    fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String> {
        let weight = weight()?;
        let fleet = fleet();
        let mut prices = economics::prices(catalog.version, &fleet);
        Ok(match prices.dense() {
            // No commitments: the marginal price is the list price, and
            // each offering's score is kept for the catalog version.
            Some(list) => {
                let scores = LISTED.with(|held| {
                    let mut held = held.borrow_mut();
                    if held.0 != catalog.version || held.1.len() != list.len() {
                        *held = (catalog.version, list.iter().map(|&price| price + weight * price).collect());
                    }
                    held.1.clone()
                });
                score_feasible_from(request, &scores)
            }
            None => {
                // Kept per fleet version: calls naming the same fleet
                // read one value per offering.
                let list = columns();
                SCORED.with(|kept| kept.borrow_mut().rank(request, catalog, |i| prices.at(i) + weight * list.price(i)))
            }
        })
    }
}

nodewright_plugin::export!(CommitmentAware);
