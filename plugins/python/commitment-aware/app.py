"""Which offering to buy, contract 0.3.0: what is already paid for first,
as the Rust `commitment-aware` plugin does. Each feasible offering is scored
by what one more node of it adds to the bill now: nothing when a free
capacity reservation or Reserved Instance takes it; for on-demand, the part
of its price the free headroom of the best Savings Plan does not cover;
spot at its price. A thousandth of the list price breaks ties.
scripts/build-polyglot builds it against wit/v0.3.0.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import instance_selection
from wit_world.imports.types import CapacityType

# The catalog and the fleet the host handed over; calls name their versions.
# The fleet travels with the first call that uses a version (`request.fleet`).
_catalog = None
_fleet = None

LIST_PRICE_WEIGHT = 0.001


class Catalog(exports.Catalog):
    def set_catalog(self, catalog) -> None:
        global _catalog
        _catalog = catalog


def _plan_discount(plan, family):
    if not plan.family_discounts:
        return plan.discount
    for name, discount in plan.family_discounts:
        if name == family:
            return discount
    return None


def marginal_price(offering, fleet) -> float:
    price = offering.price_per_hour
    if offering.capacity_type == CapacityType.SPOT:
        return price

    def free(r):
        return r.used < r.count and r.instance_type == offering.instance_type

    if offering.capacity_type == CapacityType.RESERVED:
        held = any(free(r) and r.zone == offering.zone for r in fleet.capacity_reservations)
        return 0.0 if held else price
    if any(free(r) for r in fleet.reserved_instances):
        return 0.0
    best = price
    for plan in fleet.savings_plans:
        discount = _plan_discount(plan, offering.family)
        headroom = max(plan.hourly_commitment - plan.used_per_hour, 0.0)
        if discount is None or discount >= 1.0 or headroom <= 0.0:
            continue
        best = min(best, max(price - headroom / (1.0 - discount), 0.0))
    return best


class InstanceSelection(exports.InstanceSelection):
    def rank(self, request) -> instance_selection.Ranking:
        global _fleet
        if request.fleet is not None:
            _fleet = request.fleet
        if _catalog is None or _catalog.version != request.catalog_version:
            raise Err(f"request names catalog version {request.catalog_version}, plugin holds another")
        if _fleet is None or _fleet.version != request.fleet_version:
            raise Err(f"request names fleet version {request.fleet_version}, plugin holds another")
        offerings = list(request.feasible)
        scores = []
        for i in offerings:
            o = _catalog.offerings[i]
            scores.append(marginal_price(o, _fleet) + LIST_PRICE_WEIGHT * o.price_per_hour)
        return instance_selection.Ranking(offerings=offerings, scores=scores)
