"""AlterUserScramCredentials (key 51): add, replace or remove users' SCRAM credentials.

An upsertion carries the salt, the iteration count and the salted password the
client computed; the broker derives the stored and server keys and keeps the
credential in Kafka's string form in the entity config of `users/<name>`, under the
mechanism's name (kwire.security.scram). Kafka's ZooKeeper-mode rules
(ZkAdminManager.alterUserScramCredentials): an empty name is UNACCEPTABLE_CREDENTIAL,
an unknown mechanism UNSUPPORTED_SASL_MECHANISM, iterations outside 4096..16384
UNACCEPTABLE_CREDENTIAL; a (user, mechanism) pair named twice, in deletions or
upsertions or both, DUPLICATE_RESOURCE; deleting a credential that does not exist
RESOURCE_NOT_FOUND. A user with any such error is left unchanged; the others are
written in one change of the store. Needs ALTER on the cluster.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.entity_configs import DEFAULT_ENTITY, entity_path
from kwire.handlers import RequestContext
from kwire.handlers.describe_client_quotas import throttle_of
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from kwire.security.authorizer import authorize
from kwire.security.scram import (
    MAX_ITERATIONS,
    MECHANISM_BY_CODE,
    MIN_ITERATIONS,
    ScramCredential,
)

log = logging.getLogger(__name__)

CLUSTER_AUTHORIZATION_FAILED = "Cluster authorization failed."
USERNAME_EMPTY = "Username must not be empty"
UNKNOWN_MECHANISM = "Unknown SCRAM mechanism"
ALTERED_TWICE = "A user credential cannot be altered twice in the same request"
NO_CREDENTIAL = "Attempt to delete a user credential that does not exist"


def _invalid(name: str, mechanism: int, iterations: int | None) -> tuple[ErrorCode, str] | None:
    """The error of one deletion (iterations None) or upsertion, before duplicates."""
    if not name:
        return ErrorCode.unacceptable_credential, USERNAME_EMPTY
    if mechanism not in MECHANISM_BY_CODE:
        return ErrorCode.unsupported_sasl_mechanism, UNKNOWN_MECHANISM
    if iterations is not None and iterations < MIN_ITERATIONS:
        return ErrorCode.unacceptable_credential, "Too few iterations"
    if iterations is not None and iterations > MAX_ITERATIONS:
        return ErrorCode.unacceptable_credential, "Too many iterations"
    if "/" in name or name == DEFAULT_ENTITY:
        # Entity paths keep names as they are: a '/' would split the path.
        return (
            ErrorCode.unacceptable_credential,
            f"user name {name!r} is not supported: it may not contain '/' or be {DEFAULT_ENTITY}",
        )
    return None


@api(51)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(51, ctx.api_version)
    deletions = list(request.deletions)
    upsertions = list(request.upsertions)
    results: list[tuple[str, ErrorCode, str | None]] = []

    def answer() -> Any:
        return make(
            module.AlterUserScramCredentialsResponse,
            throttle_time=throttle_of(ctx),
            results=tuple(
                make(module.AlterUserScramCredentialsResult, user=user, error_code=error, error_message=message)
                for user, error, message in results
            ),
        )

    if not authorize(ctx, AclOperation.ALTER, ResourceType.CLUSTER, CLUSTER_NAME):
        users = dict.fromkeys(e.name for e in [*deletions, *upsertions])
        results = [(u, ErrorCode.cluster_authorization_failed, CLUSTER_AUTHORIZATION_FAILED) for u in users]
        return answer()

    # Invalid entries: one result per user, the upsertion's error winning (as Kafka's map).
    invalid: dict[str, tuple[ErrorCode, str]] = {}
    for d in deletions:
        error = _invalid(d.name, d.mechanism, None)
        if error is not None:
            invalid[d.name] = error
    for u in upsertions:
        error = _invalid(u.name, u.mechanism, u.iterations)
        if error is not None:
            invalid[u.name] = error
    results += [(user, error, message) for user, (error, message) in invalid.items()]

    pairs = Counter(
        (e.name, e.mechanism) for e in [*deletions, *upsertions] if e.name not in invalid
    )
    duplicated = dict.fromkeys(name for (name, _m), n in pairs.items() if n > 1)
    results += [(user, ErrorCode.duplicate_resource, ALTERED_TWICE) for user in duplicated]
    candidates = dict.fromkeys(name for name, _m in pairs if name not in duplicated)

    store = ctx.broker.entity_configs
    missing = dict.fromkeys(
        d.name
        for d in deletions
        if d.name in candidates and MECHANISM_BY_CODE[d.mechanism] not in store.get(entity_path(user=d.name))
    )
    results += [(user, ErrorCode.resource_not_found, NO_CREDENTIAL) for user in missing]

    changes: dict[str, dict[str, str | None]] = {user: {} for user in candidates if user not in missing}
    for d in deletions:
        if d.name in changes:
            changes[d.name][MECHANISM_BY_CODE[d.mechanism]] = None
    for u in upsertions:
        if u.name in changes:
            mechanism = MECHANISM_BY_CODE[u.mechanism]
            credential = ScramCredential.from_salted_password(
                mechanism, bytes(u.salt), bytes(u.salted_password), u.iterations
            )
            changes[u.name][mechanism] = credential.format()
    if changes:
        try:
            await store.alter({entity_path(user=user): c for user, c in changes.items()})
        except Exception as e:  # the store (a file, ZooKeeper) failed: every change fails
            log.error("altering SCRAM credentials failed: %r", e)
            results += [(user, ErrorCode.unknown_server_error, str(e)) for user in changes]
            return answer()
        results += [(user, ErrorCode.none, None) for user in changes]
    return answer()
