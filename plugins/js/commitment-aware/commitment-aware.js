// Which offering to buy, contract 0.3.0: what is already paid for first, as
// the Rust `commitment-aware` plugin does. Each feasible offering is scored
// by what one more node of it adds to the bill now: nothing when a free
// capacity reservation or Reserved Instance takes it; for on-demand, the
// part of its price the free headroom of the best Savings Plan does not
// cover; spot at its price. A thousandth of the list price breaks ties.
// Records arrive with camelCase fields, enums as their WIT names, u64
// values (versions) as BigInts. `nodewright plugin new --lang js` starts a
// selection policy from this file.

const LIST_PRICE_WEIGHT = 0.001;

let held = null;
let fleet = null;

export const catalog = {
  setCatalog(c) {
    held = c;
  },
};

function planDiscount(plan, family) {
  if (plan.familyDiscounts.length === 0) return plan.discount;
  const found = plan.familyDiscounts.find(([name]) => name === family);
  return found === undefined ? null : found[1];
}

function marginalPrice(offering) {
  const price = offering.pricePerHour;
  if (offering.capacityType === "spot") return price;
  const free = (r) => r.used < r.count && r.instanceType === offering.instanceType;
  if (offering.capacityType === "reserved") {
    return fleet.capacityReservations.some((r) => free(r) && r.zone === offering.zone) ? 0 : price;
  }
  if (fleet.reservedInstances.some(free)) return 0;
  let best = price;
  for (const plan of fleet.savingsPlans) {
    const discount = planDiscount(plan, offering.family);
    const headroom = Math.max(plan.hourlyCommitment - plan.usedPerHour, 0);
    if (discount === null || discount >= 1 || headroom <= 0) continue;
    best = Math.min(best, Math.max(price - headroom / (1 - discount), 0));
  }
  return best;
}

export const instanceSelection = {
  rank(request) {
    // The fleet travels with the first call that uses a version.
    if (request.fleet !== undefined && request.fleet !== null) {
      fleet = request.fleet;
    }
    if (held === null || held.version !== request.catalogVersion) {
      // A thrown string becomes the `err` of the result.
      throw `request names catalog version ${request.catalogVersion}, plugin holds another`;
    }
    if (fleet === null || fleet.version !== request.fleetVersion) {
      throw `request names fleet version ${request.fleetVersion}, plugin holds another`;
    }
    const offerings = Array.from(request.feasible);
    const scores = offerings.map((i) => {
      const o = held.offerings[i];
      return marginalPrice(o) + LIST_PRICE_WEIGHT * o.pricePerHour;
    });
    return { offerings, scores };
  },
};
