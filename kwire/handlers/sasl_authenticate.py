"""SaslAuthenticate (key 36): one SASL token each way, after SaslHandshake v1.

A failed authentication is answered SASL_AUTHENTICATION_FAILED with the mechanism's
message, then the connection closes (Kafka's SaslServerAuthenticator). v1+ tells the
client its session lifetime (connections.max.reauth.ms, KIP-368): it re-authenticates
on the same connection before then.
"""

from __future__ import annotations

import datetime
from typing import Any

import trio
from kio.schema.errors import ErrorCode

from kwire.handlers import RequestContext
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_class
from kwire.security.sasl import SaslAuthenticationError, SaslProtocolError
from kwire.security.session import ConnectionSession, IllegalSaslState


@api(36)
async def sasl_authenticate(context: RequestContext, request: Any) -> Any:
    response = response_class(36, context.api_version)
    session: ConnectionSession | None = context.session

    def failed(error: ErrorCode, message: str) -> Any:
        if session is not None:
            session.fail(message)
        return make(response, error_code=error, error_message=message, auth_bytes=b"")

    if session is None or not session.sasl:
        return failed(ErrorCode.illegal_sasl_state, "SaslAuthenticate on a listener without SASL")
    now = trio.current_time()
    try:
        answer = session.authenticate(bytes(request.auth_bytes), now)
    except IllegalSaslState as e:
        return failed(ErrorCode.illegal_sasl_state, str(e))
    except SaslAuthenticationError as e:
        return failed(ErrorCode.sasl_authentication_failed, str(e))
    except SaslProtocolError as e:
        # A malformed token gets Kafka's generic message, not the parse error.
        return failed(ErrorCode.sasl_authentication_failed, e.kafka_message)
    return make(
        response,
        error_code=ErrorCode.none,
        error_message=None,
        auth_bytes=answer,
        session_lifetime=datetime.timedelta(milliseconds=session.session_lifetime_ms(now)),
    )
