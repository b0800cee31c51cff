"""The admin endpoint (/admin/*) of the HTTP listener: fault injection for client tests.

Off unless http.admin.enable=true: a production broker never lets anyone who reaches its
HTTP port fail its requests. The contract:

    POST   /admin/faults       {"api": "Produce" | 0, "count": 3,
                                "error": "NOT_LEADER_OR_FOLLOWER" | 6,
                                "delay_ms": 500, "drop_connection": true}
                               -> 200 the rule (count defaults to 1; at least one of error,
                                  delay_ms, drop_connection; error and drop_connection
                                  exclude each other; a delay comes first)
    GET    /admin/faults       -> 200 {"faults": [rule, ...]} (active rules, oldest first)
    DELETE /admin/faults       -> 200 {"cleared": n}
    DELETE /admin/faults/<id>  -> 200 {"removed": rule}, 404 if there is no such rule

A rule: {"id", "api", "api_key", "count", "remaining", "error", "error_code", "delay_ms",
"drop_connection"}. Bad input: 400 {"error": message}.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kwire.faults import FaultSpecError, parse_rule
from kwire.http.server import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from kwire.broker import Broker

log = logging.getLogger(__name__)

FAULTS = "/admin/faults"


async def route(broker: Broker, request: HttpRequest) -> HttpResponse | None:
    path = request.path.rstrip("/")
    if path != "/admin" and not path.startswith("/admin/"):
        return None
    faults = broker.faults
    if faults is None:
        return HttpResponse.error(404, "the admin endpoint is off (http.admin.enable=false)")
    if path == FAULTS:
        if request.method == "POST":
            try:
                api_key, count, fault = parse_rule(request.json())
            except (FaultSpecError, ValueError) as e:
                return HttpResponse.error(400, str(e))
            rule = faults.add(api_key, count, fault)
            log.info("fault injection: %s", rule.to_json())
            return HttpResponse.json(rule.to_json())
        if request.method in ("GET", "HEAD"):
            return HttpResponse.json({"faults": [r.to_json() for r in faults.rules()]})
        if request.method == "DELETE":
            cleared = faults.clear()
            log.info("fault injection: %d rules cleared", cleared)
            return HttpResponse.json({"cleared": cleared})
        return HttpResponse.error(405, "use POST, GET or DELETE")
    head, _, rule_id = path.rpartition("/")
    if head == FAULTS:
        if request.method != "DELETE":
            return HttpResponse.error(405, "use DELETE")
        if not rule_id.isdigit():
            return HttpResponse.error(400, f"a rule id is a number, got {rule_id!r}")
        removed = faults.remove(int(rule_id))
        if removed is None:
            return HttpResponse.error(404, f"no fault rule {rule_id}")
        log.info("fault injection: rule %s removed", rule_id)
        return HttpResponse.json({"removed": removed.to_json()})
    return None
