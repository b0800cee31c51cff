"""DeleteAcls (key 31): remove the ACLs matching each filter.

Needs ALTER on the cluster. As Kafka's AclAuthorizer.deleteAcls, an ACL matched by
several filters is answered once, under the first of them; a filter with an UNKNOWN
element answers INVALID_REQUEST and deletes nothing.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.handlers import RequestContext
from kwire.handlers.describe_acls import (
    CLUSTER_AUTHORIZATION_FAILED,
    filter_error,
    filter_matches,
    sorted_bindings,
    throttle,
)
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclBinding, AclOperation
from kwire.security.authorizer import authorize_cluster

NO_AUTHORIZER = "No Authorizer is configured."


DELETE_ACLS_KEY = 31


@api(DELETE_ACLS_KEY)
async def handle(ctx: RequestContext, request: Any) -> Any:
    version = ctx.api_version
    module = response_module(DELETE_ACLS_KEY, version)

    def filter_result(error: ErrorCode, message: str | None = None, matched: tuple[AclBinding, ...] | list[AclBinding] = ()) -> Any:
        return make(
            module.DeleteAclsFilterResult,
            error_code=error,
            error_message=message,
            matching_acls=tuple(
                make(
                    module.DeleteAclsMatchingAcl,
                    error_code=ErrorCode.none,
                    error_message=None,
                    resource_type=b.resource_type,
                    resource_name=b.resource_name,
                    pattern_type=b.pattern_type,
                    principal=b.principal,
                    host=b.host,
                    operation=b.operation,
                    permission_type=b.permission_type,
                )
                for b in matched
            ),
        )

    def answer(results: list[Any]) -> Any:
        return make(module.DeleteAclsResponse, throttle_time=throttle(ctx), filter_results=tuple(results))

    if not authorize_cluster(ctx, AclOperation.ALTER):
        return answer([filter_result(ErrorCode.cluster_authorization_failed, CLUSTER_AUTHORIZATION_FAILED)] * len(request.filters))
    store = ctx.broker.acl_store
    if ctx.broker.authorizer is None or store is None:
        return answer([filter_result(ErrorCode.security_disabled, NO_AUTHORIZER)] * len(request.filters))
    errors = [filter_error(f) for f in request.filters]
    matched: list[list[AclBinding]] = [[] for _ in request.filters]
    for binding in sorted_bindings(list(store.bindings())):
        for index, acl_filter in enumerate(request.filters):
            if errors[index] is None and filter_matches(acl_filter, binding):
                matched[index].append(binding)
                break
    deleted = [b for bindings in matched for b in bindings]
    if deleted:
        await store.remove(deleted)
    return answer(
        [
            filter_result(ErrorCode.invalid_request, error) if error is not None else filter_result(ErrorCode.none, None, found)
            for error, found in zip(errors, matched, strict=True)
        ]
    )
