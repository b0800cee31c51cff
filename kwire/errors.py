"""The error every layer raises for an answer with a Kafka error code."""

from __future__ import annotations

from kio.schema.errors import ErrorCode


class KafkaError(Exception):
    """An error answered to the client with a Kafka error code."""

    def __init__(self, error_code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or error_code.name)
        self.error_code = error_code
        self.message = message


class StartupError(Exception):
    """The broker cannot start (ZooKeeper unreachable, a cluster id mismatch, a broker
    id taken): the command exits with this message, without a traceback."""
