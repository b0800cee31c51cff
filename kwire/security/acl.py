"""ACLs: Kafka's model (resource pattern + access control entry) with its wire codes.

The authorizer and the stores build on this; the codes are those of
org.apache.kafka.common.{resource,acl} (ResourceType, PatternType, AclOperation,
AclPermissionType), which CreateAcls/DescribeAcls/DeleteAcls carry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


class ResourceType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class AclPermissionType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


# The name of the one cluster resource, and the wildcards of names, principals, hosts.
CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class AclBinding:
    """One ACL: a resource pattern and an access control entry."""

    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType  # LITERAL or PREFIXED in a stored binding
    principal: str  # "User:alice", or "User:*"
    host: str  # an IP address, or "*"
    operation: AclOperation
    permission_type: AclPermissionType


class AclStore(Protocol):
    """Where ACLs persist: a file on one broker (kwire.security.acl_store), znodes under
    /kafka-acl and /kafka-acl-extended in a cluster (kwire.cluster.zk_security).
    `bindings()` is the current view; subscribers are called after it changed (a local
    change, or another broker's seen through ZooKeeper)."""

    def bindings(self) -> Iterable[AclBinding]: ...

    async def add(self, bindings: Iterable[AclBinding]) -> None: ...

    async def remove(self, bindings: Iterable[AclBinding]) -> None: ...

    def subscribe(self, changed: Callable[[], None]) -> None: ...
