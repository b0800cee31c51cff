"""DescribeUserScramCredentials (key 50): which SCRAM mechanisms each user has, and
with how many iterations (never the credential itself).

Kafka's ZooKeeper-mode behaviour (ZkAdminManager): no users (null or empty) describes
every user with a credential, sorted by name; a named user without one is
RESOURCE_NOT_FOUND, an empty name too, a name given twice DUPLICATE_RESOURCE (one
result per distinct name, in the request's order). Needs DESCRIBE on the cluster,
else the whole answer is CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.entity_configs import entity_path, parse_entity_path
from kwire.handlers import RequestContext
from kwire.handlers.describe_client_quotas import throttle_of
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from kwire.security.authorizer import authorize
from kwire.security.scram import SCRAM_MECHANISMS, ScramCredential

log = logging.getLogger(__name__)

CLUSTER_AUTHORIZATION_FAILED = "Cluster authorization failed."
USERNAME_EMPTY = "Username must not be empty"
NO_CREDENTIAL = "Attempt to describe a user credential that does not exist"


def credential_infos(configs: Mapping[str, str]) -> list[tuple[int, int]]:
    """(mechanism code, iterations) of each SCRAM credential of a user's configs, in
    Kafka's mechanism order; ValueError for a credential that cannot be read."""
    return [
        (code, ScramCredential.parse(configs[name]).iterations)
        for name, (_hash, code) in SCRAM_MECHANISMS.items()
        if name in configs
    ]


@api(50)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(50, ctx.api_version)
    requested = None if request.users is None else [u.name for u in request.users]

    def result(user: str, error: ErrorCode = ErrorCode.none, message: str | None = None,
               infos: list[tuple[int, int]] | None = None) -> Any:
        return make(
            module.DescribeUserScramCredentialsResult,
            user=user,
            error_code=error,
            error_message=message,
            credential_infos=tuple(
                make(module.CredentialInfo, mechanism=code, iterations=iterations)
                for code, iterations in infos or ()
            ),
        )

    def answer(results: list[Any], error: ErrorCode = ErrorCode.none, message: str | None = None) -> Any:
        return make(
            module.DescribeUserScramCredentialsResponse,
            throttle_time=throttle_of(ctx),
            error_code=error,
            error_message=message,
            results=tuple(results),
        )

    if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME):
        failed = ErrorCode.cluster_authorization_failed
        return answer(
            [result(u, failed, CLUSTER_AUTHORIZATION_FAILED) for u in dict.fromkeys(requested or [])],
            failed,
            CLUSTER_AUTHORIZATION_FAILED,
        )

    store = ctx.broker.entity_configs

    def described(user: str, configs: Mapping[str, str], explicit: bool) -> Any | None:
        try:
            infos = credential_infos(configs)
        except ValueError as e:  # bad data in the store: reported, not fatal
            log.error("the SCRAM credentials of user %s cannot be read: %s", user, e)
            return result(user, ErrorCode.unknown_server_error, str(e))
        if infos:
            return result(user, infos=infos)
        if explicit:
            return result(user, ErrorCode.resource_not_found, f"{NO_CREDENTIAL}: {user}")
        return None

    results: list[Any] = []
    if not requested:
        found: dict[str, Any] = {}
        for path, configs in store.items():
            try:
                user, client_id = parse_entity_path(path)
            except ValueError:
                continue
            if user is None or client_id is not None:
                continue
            entry = described(user, configs, explicit=False)
            if entry is not None:
                found[user] = entry
        results = [found[user] for user in sorted(found)]
        return answer(results)
    counts = Counter(requested)
    for user in dict.fromkeys(requested):
        if not user:
            results.append(result(user, ErrorCode.resource_not_found, USERNAME_EMPTY))
        elif counts[user] > 1:
            results.append(
                result(
                    user,
                    ErrorCode.duplicate_resource,
                    f"Cannot describe SCRAM credentials for the same user twice in a single request: {user}",
                )
            )
        else:
            entry = described(user, store.get(entity_path(user=user)), explicit=True)
            assert entry is not None
            results.append(entry)
    return answer(results)
