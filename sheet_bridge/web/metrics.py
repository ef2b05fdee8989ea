"""`GET /metrics`: Prometheus's text format (https://prometheus.io/docs/instrumenting/exposition_formats/).

What this process (or, under gunicorn, every worker of this instance) counted as it ran passes
(sheet_bridge/metrics.py), and what the ledger knows, read at each scrape so every replica
gives the same figure: passes lost in the last 24 hours and edits waiting for a pass, per
bridge. Bridges are labelled with their config file's name, never a spreadsheet id, and no
count carries a lead's data; the route needs no credentials (docs/operating.md "Metrics")."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from sheet_bridge.sync.ledger import LedgerError
from sheet_bridge.sync.run import Bridge
from sheet_bridge.web.status import LOST_WINDOW_HOURS, lost_passes

log = logging.getLogger(__name__)


def bridge_label(bridge: Bridge) -> str:
    """A bridge's name in metrics: its config file's name (brand-a.toml: brand-a)."""
    source = bridge.config.source
    return Path(source).stem if source and not source.startswith("<") else bridge.config.sheets.tab


class LedgerCollector(Collector):
    """Gauges read from each bridge's ledger at scrape time."""

    def __init__(self, bridges: list[Bridge]) -> None:
        self.bridges = bridges

    def collect(self) -> Iterator[Metric]:
        lost = GaugeMetricFamily(
            "sheet_bridge_lost_passes",
            f"Passes started in the last {LOST_WINDOW_HOURS} h whose process stopped before "
            "they finished (killed or restarted mid-pass).",
            labels=["bridge"],
        )
        pending = GaugeMetricFamily(
            "sheet_bridge_edits_pending",
            "Status edits recorded and not yet sent by a pass.",
            labels=["bridge"],
        )
        up = GaugeMetricFamily(
            "sheet_bridge_ledger_up",
            "1 when the bridge's ledger answered this scrape, else 0.",
            labels=["bridge"],
        )
        for bridge in self.bridges:
            name = bridge_label(bridge)
            try:
                now = bridge.clock()
                lost_now = len(lost_passes(bridge, now))
                pending_now = len(bridge.ledger.pending_edits(bridge.sheet_tab))
            except LedgerError as exc:
                log.warning("metrics: the ledger of %s cannot be read: %s", name, exc)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            lost.add_metric([name], lost_now)
            pending.add_metric([name], pending_now)
        yield from (lost, pending, up)


def exposition(bridges: list[Bridge]) -> tuple[bytes, str]:
    """The /metrics body and its content type. Under gunicorn (PROMETHEUS_MULTIPROC_DIR set)
    the counters are every worker's, added up; else this process's."""
    ledger = CollectorRegistry(auto_describe=True)
    ledger.register(LedgerCollector(bridges))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counted = CollectorRegistry()
        MultiProcessCollector(counted)  # type: ignore[no-untyped-call]
    else:
        counted = REGISTRY
    return generate_latest(counted) + generate_latest(ledger), CONTENT_TYPE_LATEST
