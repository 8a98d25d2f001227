"""`empty-only` in Python: delete disruptable nodes that run no pods and are
at least `min_age_seconds` old (config, default 30), as the Rust plugin does.

Build: componentize-py -d ../../../wit/v0.1.0 -w consolidator componentize app -o empty-only-py.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import consolidation
from wit_world.imports import host

_catalog = None
_min_age = None


def _config_min_age() -> int:
    global _min_age
    if _min_age is None:
        config = json.loads(host.config() or "{}")
        unknown = set(config) - {"min_age_seconds"}
        if unknown:
            raise Err(f"invalid plugin config: unknown field `{sorted(unknown)[0]}`")
        _min_age = int(config.get("min_age_seconds", 30))
    return _min_age


class Catalog(exports.Catalog):
    def set_catalog(self, catalog) -> None:
        global _catalog
        _catalog = catalog


class Consolidation(exports.Consolidation):
    def plan(self, snapshot):
        if _catalog is None or _catalog.version != snapshot.catalog_version:
            raise Err(f"request names catalog version {snapshot.catalog_version}, plugin holds another")
        min_age = _config_min_age()
        return [
            consolidation.Action_Delete([index])
            for index, node in enumerate(snapshot.nodes)
            if node.disruptable and not node.pods and node.age_seconds >= min_age
        ]
