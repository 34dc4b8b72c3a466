"""Routes are declared once (service.app.ROUTES): the router and /openapi.json must agree with it."""

from __future__ import annotations

from appliance.config.schema import ApplianceConfig
from appliance.service.app import ROUTES, create_app
from appliance.service.metrics import ServiceMetrics
from appliance.service.openapi import openapi_document
from appliance.service.scheduler import Scheduler
from appliance.service.state import ServiceState


def test_router_and_openapi_serve_the_same_routes() -> None:
    metrics = ServiceMetrics()
    state = ServiceState(
        config=ApplianceConfig.model_validate({}),
        scheduler=Scheduler(queue_size=1, metrics=metrics),
        metrics=metrics,
    )
    app = create_app(state)
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"  # aiohttp adds HEAD to every GET
    }
    doc = openapi_document("test", ROUTES)
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    assert len(served) == len(ROUTES)  # no path declared twice
    for path, ops in doc["paths"].items():
        for op in ops.values():
            # every route documents its success, or (/api/embed) the 501 it always answers
            assert op["summary"] and ({"200", "501"} & set(op["responses"])), path
    refs = {s.split("/")[-1] for s in _refs(doc["paths"])}
    assert refs <= set(doc["components"]["schemas"]), refs - set(doc["components"]["schemas"])


def _refs(tree: object) -> list[str]:
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == "$ref"] + [r for v in tree.values() for r in _refs(v)]
    if isinstance(tree, list):
        return [r for v in tree for r in _refs(v)]
    return []
