"""SaslHandshake (key 17): the client names its SASL mechanism.

v0: the SASL tokens follow as raw frames without Kafka headers; v1: they come in
SaslAuthenticate requests. An unknown or disabled mechanism is answered
UNSUPPORTED_SASL_MECHANISM with the enabled ones, then the connection closes, as
Kafka's SaslServerAuthenticator does. On a listener without SASL Kafka answers
ILLEGAL_SASL_STATE.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.handlers import RequestContext
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_class
from kwire.security.session import ConnectionSession, IllegalSaslState


@api(17)
async def sasl_handshake(context: RequestContext, request: Any) -> Any:
    response = response_class(17, context.api_version)
    session: ConnectionSession | None = context.session
    if session is None or not session.sasl:
        return make(response, error_code=ErrorCode.illegal_sasl_state, mechanisms=())
    try:
        accepted = session.handshake(request.mechanism.upper(), context.api_version)
    except IllegalSaslState:
        session.fail("SaslHandshake out of turn")
        return make(response, error_code=ErrorCode.illegal_sasl_state, mechanisms=tuple(session.mechanisms))
    error = ErrorCode.none if accepted else ErrorCode.unsupported_sasl_mechanism
    return make(response, error_code=error, mechanisms=tuple(session.mechanisms))
