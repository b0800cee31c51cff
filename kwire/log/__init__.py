"""The partition log (Kafka's UnifiedLog / LogSegment); see kwire.log.log for the API."""

from kwire.log.log import LogConfig, LogRead, OffsetOutOfRangeError, PartitionLog
from kwire.log.manager import LogManager
from kwire.log.segment import FileRegion

__all__ = [
    "FileRegion",
    "LogConfig",
    "LogManager",
    "LogRead",
    "OffsetOutOfRangeError",
    "PartitionLog",
]
