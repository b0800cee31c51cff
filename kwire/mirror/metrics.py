"""The mirror's Prometheus metrics (served on `http.listeners` when set) and the totals its
progress log lines are made of. Counters are bumped once per batch, not per record."""

from __future__ import annotations

from typing import Any


class MirrorMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        flow = ["source", "target"]
        self.records = Counter(
            "kwire_mirror_records",
            "Records copied to the target (acknowledged by it; with exactly-once, committed).",
            [*flow, "topic"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "kwire_mirror_bytes",
            "Key, value and header bytes of the records copied.",
            [*flow, "topic"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "kwire_mirror_replication_lag",
            "Records on the source not yet copied: its high watermark minus the next "
            "offset the mirror will read.",
            [*flow, "topic", "partition"],
            registry=self.registry,
        )
        self.latency = Gauge(
            "kwire_mirror_replication_latency_seconds",
            "Age of the newest record of the last batch copied, from its timestamp to "
            "the target's acknowledgement.",
            flow,
            registry=self.registry,
        )
        self.offset_syncs = Counter(
            "kwire_mirror_offset_syncs",
            "Offset syncs written to the source.",
            flow,
            registry=self.registry,
        )
        self.checkpoints = Counter(
            "kwire_mirror_checkpoints",
            "Checkpoints (translated group offsets) written to the target.",
            flow,
            registry=self.registry,
        )
        self.group_offsets_synced = Counter(
            "kwire_mirror_group_offsets_synced",
            "Translated offsets committed to consumer groups on the target.",
            flow,
            registry=self.registry,
        )
        self.transactions = Counter(
            "kwire_mirror_transactions",
            "Transactions of the exactly-once mode, by outcome.",
            [*flow, "outcome"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "kwire_mirror_recoveries",
            "Times a flow went back to its last stored offsets after a failure.",
            flow,
            registry=self.registry,
        )

    def serve(self, listener: str) -> tuple[Any, str]:
        """Serve /metrics on `http://host:port` (port 0 picks one) from a thread of
        prometheus-client's; (server, url) back, server.shutdown() stops it."""
        from urllib.parse import urlsplit

        from prometheus_client import start_http_server

        parts = urlsplit(listener)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"http.listeners={listener!r}: expected http://HOST:PORT")
        server, _thread = start_http_server(parts.port, parts.hostname, registry=self.registry)
        host, port = server.server_address[:2]
        return server, f"http://{host}:{port}"
