"""Which offering to buy: every feasible offering scored by its price per
hour, as the Rust `cheapest` plugin and the host's built-in policy do.
Lower scores are preferred; an offering left out is never bought.
`nodewright plugin new --lang python` starts a selection policy from this
file; scripts/build-polyglot builds it here.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import instance_selection

# The catalog the host handed over; calls refer to offerings by index.
_catalog = None


class Catalog(exports.Catalog):
    def set_catalog(self, catalog) -> None:
        global _catalog
        _catalog = catalog


class InstanceSelection(exports.InstanceSelection):
    def rank(self, request) -> instance_selection.Ranking:
        if _catalog is None or _catalog.version != request.catalog_version:
            raise Err(f"request names catalog version {request.catalog_version}, plugin holds another")
        offerings = list(request.feasible)
        scores = [_catalog.offerings[i].price_per_hour for i in offerings]
        return instance_selection.Ranking(offerings=offerings, scores=scores)
