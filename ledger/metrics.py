"""Prometheus metrics when prometheus_client is installed; silent no-ops otherwise.

The writer updates these once per batch (counts aggregated per batch), never per
event from producer threads, so metrics cost nothing on the ``record()`` path.
"""

from __future__ import annotations

try:  # optional dependency: `pip install prometheus_client`
    from prometheus_client import Counter, Gauge, Histogram
except ImportError:  # pragma: no cover - exercised only without the package
    Counter = Gauge = Histogram = None


class _Noop:
    def labels(self, *args, **kwargs):
        return self

    def inc(self, amount=1):
        pass

    def set(self, value):
        pass

    def observe(self, value):
        pass


def _make(kind, name, doc, labels=()):
    if kind is None:
        return _Noop()
    try:
        return kind(name, doc, labels)
    except ValueError:  # already registered (a second import under another name)
        from prometheus_client import REGISTRY

        return REGISTRY._names_to_collectors[name]  # noqa: SLF001


EVENTS = _make(Counter, "ledger_events", "Events written, by namespace and kind", ("namespace", "kind"))
DROPS = _make(Counter, "ledger_drops", "Events dropped, by namespace and reason", ("namespace", "reason"))
QUEUE_DEPTH = _make(Gauge, "ledger_queue_depth", "Events waiting for the writer", ("namespace",))
BATCH_WRITE = _make(Histogram, "ledger_batch_write_seconds", "Seconds per batch write()", ("namespace",))
FSYNC = _make(Histogram, "ledger_fsync_seconds", "Seconds per fsync()", ("namespace",))
