"""The shipped Grafana dashboard only queries metrics the code exports, and shows each."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import streaming.metrics  # noqa: F401  (registers the metrics)

DASHBOARD = (
    Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "taskstream-dashboard.json"
)


def exported() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("taskstream_"):
            # A labelled counter has no samples until used: name it as Prometheus will.
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def test_every_dashboard_query_names_an_exported_metric_and_every_metric_is_shown() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queried = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"taskstream_[a-z_]+", target["expr"])
    }
    available = exported()
    assert queried <= available, queried - available
    families = {n.removesuffix("_total") for n in available}
    assert families <= {n.removesuffix("_total") for n in queried}, families - queried
