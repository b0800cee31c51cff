"""Client quotas (issue 10): rates over Kafka's sample windows and the quota manager.

See kwire.quotas.manager for the API the request handlers use.
"""

from kwire.quotas.manager import (
    QUOTA_KEYS,
    STRICT_MUTATION_SINCE,
    ClientQuotaManager,
    QuotaType,
    strict_mutation,
)

__all__ = [
    "QUOTA_KEYS",
    "STRICT_MUTATION_SINCE",
    "ClientQuotaManager",
    "QuotaType",
    "strict_mutation",
]
