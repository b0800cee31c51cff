"""The partition log (Kafka's UnifiedLog / LogSegment); see kwire.log.log for the API."""

from kwire.log.log import FlushJob, LogConfig, LogRead, OffsetOutOfRangeError, PartitionLog
from kwire.log.manager import LogManager
from kwire.log.segment import CorruptRecordError, FileRegion

__all__ = [
    "CorruptRecordError",
    "FileRegion",
    "FlushJob",
    "LogConfig",
    "LogManager",
    "LogRead",
    "OffsetOutOfRangeError",
    "PartitionLog",
]
