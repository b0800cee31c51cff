"""DescribeClientQuotas (48) and AlterClientQuotas (49) against a real broker: raw kio
requests for every filter kind and error, and the Java client's Admin
(alterClientQuotas / describeClientQuotas). Quotas persist across a restart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.static.primitive import f64, i8
from raw_client import RawClient

from compat.clients import install_java, java_classpath
from kwire.entity_configs import ENTITY_CONFIGS_FILE
from kwire.protocol.messages import make, request_class, request_module

EXACT, DEFAULT, SPECIFIED = 0, 1, 2


def alter_request(version: int, entries: list[tuple[dict[str, str | None], list[tuple]]],
                  validate_only: bool = False) -> Any:
    """entries: (entity type -> name or None, [(key, value) to set | (key,) to remove])."""
    module = request_module(49, version)
    return make(
        request_class(49, version),
        entries=tuple(
            make(
                module.EntryData,
                entity=tuple(make(module.EntityData, entity_type=t, entity_name=n) for t, n in entity.items()),
                ops=tuple(
                    make(module.OpData, key=op[0], value=f64(op[1] if len(op) > 1 else 0.0),
                         remove=len(op) == 1)
                    for op in ops
                ),
            )
            for entity, ops in entries
        ),
        validate_only=validate_only,
    )


def describe_request(version: int, components: list[tuple[str, int, str | None]],
                     strict: bool = False) -> Any:
    module = request_module(48, version)
    return make(
        request_class(48, version),
        components=tuple(
            make(module.ComponentData, entity_type=t, match_type=i8(m), match=name)
            for t, m, name in components
        ),
        strict=strict,
    )


def alter(port: int, entries: list, validate_only: bool = False, version: int = 1) -> list[tuple[ErrorCode, str | None]]:
    with RawClient(port) as client:
        response = client.send(alter_request(version, entries, validate_only))
    assert len(response.entries) == len(entries)
    return [(e.error_code, e.error_message) for e in response.entries]


def describe(port: int, components: list, strict: bool = False, version: int = 1) -> Any:
    with RawClient(port) as client:
        return client.send(describe_request(version, components, strict))


def entities(response: Any) -> dict[tuple, dict[str, float]]:
    """{((type, name), ...) sorted: {key: value}} of a describe response."""
    assert response.error_code == ErrorCode.none, response.error_message
    return {
        tuple(sorted(((e.entity_type, e.entity_name) for e in entry.entity), key=str)):
            {v.key: v.value for v in entry.values}
        for entry in response.entries
    }


def key(**parts: str | None) -> tuple:
    return tuple(sorted(((t.replace("_", "-"), n) for t, n in parts.items()), key=str))


ALL = {
    key(user="alice"): {"producer_byte_rate": 1024000.0, "request_percentage": 50.5},
    key(user="alice", client_id="app"): {"consumer_byte_rate": 2048000.0},
    key(user=None): {"producer_byte_rate": 100000.0},
    key(user=None, client_id=None): {"controller_mutation_rate": 10.0},
    key(user="alice", client_id=None): {"producer_byte_rate": 3000.0},
    key(client_id="app"): {"request_percentage": 200.0},
    key(client_id=None): {"consumer_byte_rate": 500000.0},
}


def set_all(port: int, version: int = 1) -> None:
    entries = [(dict(k), list(v.items())) for k, v in ALL.items()]
    assert alter(port, entries, version=version) == [(ErrorCode.none, None)] * len(entries)


@pytest.fixture
def scram_broker(broker_factory, tmp_path: Path):
    """A broker whose entity configs already hold a SCRAM credential of alice and of bob
    (users/<user> keeps both credentials and quotas)."""
    data = tmp_path / "broker"
    data.mkdir()
    (data / ENTITY_CONFIGS_FILE).write_text(json.dumps({
        "users/alice": {"SCRAM-SHA-256": "salt=c2FsdA==,stored_key=a2V5,server_key=a2V5,iterations=4096"},
        "users/bob": {"SCRAM-SHA-512": "salt=c2FsdA==,stored_key=a2V5,server_key=a2V5,iterations=4096"},
    }))
    return broker_factory()


@pytest.mark.parametrize("version", [0, 1])
def test_set_and_describe_every_filter_kind(scram_broker, version: int) -> None:
    port = scram_broker.port
    set_all(port, version)
    # No filter: every entity with a quota, SCRAM credentials left out (bob has none).
    assert entities(describe(port, [], version=version)) == ALL
    assert entities(describe(port, [], strict=True, version=version)) == {}
    # EXACT user: non-strict, every entity of alice; strict, users/alice alone.
    alice = {k: v for k, v in ALL.items() if ("user", "alice") in k}
    assert entities(describe(port, [("user", EXACT, "alice")], version=version)) == alice
    assert entities(describe(port, [("user", EXACT, "alice")], strict=True, version=version)) == {
        key(user="alice"): ALL[key(user="alice")]
    }
    # DEFAULT user: users/<default> and users/<default>/clients/<default>.
    assert entities(describe(port, [("user", DEFAULT, None)], version=version)) == {
        k: v for k, v in ALL.items() if ("user", None) in k
    }
    # SPECIFIED client-id, strict: client entities alone, named and default.
    assert entities(describe(port, [("client-id", SPECIFIED, None)], strict=True, version=version)) == {
        key(client_id="app"): ALL[key(client_id="app")],
        key(client_id=None): ALL[key(client_id=None)],
    }
    # Two components: alice with any client id; the default client of the default user.
    assert entities(describe(port, [("user", EXACT, "alice"), ("client-id", SPECIFIED, None)],
                             version=version)) == {
        key(user="alice", client_id="app"): ALL[key(user="alice", client_id="app")],
        key(user="alice", client_id=None): ALL[key(user="alice", client_id=None)],
    }
    assert entities(describe(port, [("client-id", DEFAULT, None), ("user", DEFAULT, None)],
                             strict=True, version=version)) == {
        key(user=None, client_id=None): ALL[key(user=None, client_id=None)]
    }
    assert entities(describe(port, [("user", EXACT, "nobody")], version=version)) == {}
    assert describe(port, [], version=version).throttle_time.total_seconds() == 0


def test_remove_validate_only_and_restart(scram_broker) -> None:
    port = scram_broker.port
    set_all(port)
    alice = {"user": "alice"}
    # validate_only changes nothing, and says what would fail.
    assert alter(port, [(alice, [("producer_byte_rate",), ("consumer_byte_rate", 7.0)])],
                 validate_only=True) == [(ErrorCode.none, None)]
    assert alter(port, [(alice, [("bogus", 1.0)])], validate_only=True)[0][0] == ErrorCode.invalid_request
    assert entities(describe(port, [])) == ALL
    # remove one key, change another.
    assert alter(port, [(alice, [("producer_byte_rate",), ("request_percentage", 75.0)])]) == [
        (ErrorCode.none, None)
    ]
    expected = dict(ALL)
    expected[key(user="alice")] = {"request_percentage": 75.0}
    assert entities(describe(port, [])) == expected
    # Removing every quota key drops the entity from the answer, not alice's credential.
    assert alter(port, [(alice, [("request_percentage",)]),
                        ({"client-id": None}, [("consumer_byte_rate",), ("producer_byte_rate",)])]) == [
        (ErrorCode.none, None)
    ] * 2
    del expected[key(user="alice")]
    del expected[key(client_id=None)]
    assert entities(describe(port, [])) == expected
    stored = json.loads((scram_broker.data_dir / ENTITY_CONFIGS_FILE).read_text())
    assert "SCRAM-SHA-256" in stored["users/alice"]
    assert stored["users/<default>/clients/<default>"] == {"controller_mutation_rate": "10.0"}
    assert stored["users/alice/clients/app"] == {"consumer_byte_rate": "2048000"}
    # Everything survives a restart.
    scram_broker.restart()
    assert entities(describe(port, [])) == expected
    assert "SCRAM-SHA-256" in json.loads((scram_broker.data_dir / ENTITY_CONFIGS_FILE).read_text())["users/alice"]


def test_alter_errors(broker) -> None:
    port = broker.port
    invalid = ErrorCode.invalid_request
    cases = [
        ({"user": "u1"}, [("bogus_rate", 1.0)], "Invalid configuration key bogus_rate"),
        ({"user": "u2"}, [("SCRAM-SHA-256",)], "Invalid configuration key SCRAM-SHA-256"),
        ({"user": "u3"}, [("producer_byte_rate", 0.0)], "Quota producer_byte_rate must be greater than 0"),
        ({"user": "u4"}, [("request_percentage", -5.0)], "Quota request_percentage must be greater than 0"),
        ({"user": "u5"}, [("consumer_byte_rate", 10.5)], "consumer_byte_rate cannot be a fractional value."),
        ({"user": "u6"}, [("producer_byte_rate", 1.0), ("producer_byte_rate", 2.0)], "Duplicate quota key"),
        ({}, [("producer_byte_rate", 1.0)], "Invalid empty client quota entity"),
        ({"user": ""}, [("producer_byte_rate", 1.0)], "Empty user not supported"),
        ({"ip": "127.0.0.1"}, [("connection_creation_rate", 1.0)], "ip quotas are not supported"),
        ({"group": "g"}, [("producer_byte_rate", 1.0)], "Unhandled client quota entity type: group"),
        ({"client-id": "a/b"}, [("producer_byte_rate", 1.0)], "may not contain '/'"),
    ]
    # One request: each entry is answered on its own.
    results = alter(port, [(entity, ops) for entity, ops, _ in cases])
    for (error, message), (entity, ops, expected) in zip(results, cases, strict=True):
        assert error == invalid, (entity, ops)
        assert expected in (message or ""), (message, expected)
    # The same entity twice: both refused; a valid entry of the same request applies.
    results = alter(port, [
        ({"user": "v", "client-id": "c"}, [("producer_byte_rate", 1000.0)]),
        ({"client-id": "c", "user": "v"}, [("consumer_byte_rate", 1000.0)]),
        ({"user": "w"}, [("producer_byte_rate", 1000.0)]),
    ])
    assert [e for e, _ in results] == [invalid, invalid, ErrorCode.none]
    assert "Ignoring duplicate entity" in (results[0][1] or "")
    assert entities(describe(port, [])) == {key(user="w"): {"producer_byte_rate": 1000.0}}


def test_describe_errors(broker) -> None:
    port = broker.port
    cases = [
        ([("user", 3, None)], ErrorCode.invalid_request, "Unknown match type 3"),
        ([("user", EXACT, None)], ErrorCode.invalid_request, "MATCH_TYPE_EXACT, but set match string to null"),
        ([("user", DEFAULT, "x")], ErrorCode.invalid_request, "MATCH_TYPE_DEFAULT, but also specified"),
        ([("user", SPECIFIED, "x")], ErrorCode.invalid_request, "MATCH_TYPE_SPECIFIED, but also specified"),
        ([("user", SPECIFIED, None), ("user", EXACT, "a")], ErrorCode.invalid_request, "more than once"),
        ([("", SPECIFIED, None)], ErrorCode.invalid_request, "Invalid empty entity type."),
        ([("ip", SPECIFIED, None)], ErrorCode.invalid_request, "ip quotas are not supported"),
        ([("group", SPECIFIED, None)], ErrorCode.unsupported_version, "Unsupported entity type group"),
    ]
    for components, error, message in cases:
        response = describe(port, components)
        assert response.error_code == error, components
        assert message in (response.error_message or ""), response.error_message
        assert response.entries is None


JAVA_ADMIN = r"""
import java.util.*;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.quota.*;

public class Quotas {
    static void show(String label, Map<ClientQuotaEntity, Map<String, Double>> found) {
        List<String> lines = new ArrayList<>();
        for (Map.Entry<ClientQuotaEntity, Map<String, Double>> e : found.entrySet())
            lines.add(new TreeMap<>(e.getKey().entries()) + "=" + new TreeMap<>(e.getValue()));
        Collections.sort(lines);
        System.out.println(label + " " + lines);
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        try (Admin admin = Admin.create(props)) {
            ClientQuotaEntity jane = new ClientQuotaEntity(Map.of("user", "jane"));
            Map<String, String> parts = new HashMap<>();
            parts.put("user", "jane");
            parts.put("client-id", null);
            ClientQuotaEntity janeAnyClient = new ClientQuotaEntity(parts);
            admin.alterClientQuotas(List.of(
                new ClientQuotaAlteration(jane, List.of(
                    new ClientQuotaAlteration.Op("producer_byte_rate", 2048.0),
                    new ClientQuotaAlteration.Op("request_percentage", 12.5))),
                new ClientQuotaAlteration(janeAnyClient, List.of(
                    new ClientQuotaAlteration.Op("consumer_byte_rate", 4096.0))))).all().get();
            show("contains", admin.describeClientQuotas(ClientQuotaFilter.contains(
                List.of(ClientQuotaFilterComponent.ofEntity("user", "jane")))).entities().get());
            show("only", admin.describeClientQuotas(ClientQuotaFilter.containsOnly(
                List.of(ClientQuotaFilterComponent.ofEntity("user", "jane")))).entities().get());
            show("default-client", admin.describeClientQuotas(ClientQuotaFilter.contains(
                List.of(ClientQuotaFilterComponent.ofDefaultEntity("client-id")))).entities().get());
            admin.alterClientQuotas(List.of(new ClientQuotaAlteration(jane, List.of(
                new ClientQuotaAlteration.Op("producer_byte_rate", null))))).all().get();
            show("removed", admin.describeClientQuotas(ClientQuotaFilter.all()).entities().get());
            try {
                admin.alterClientQuotas(List.of(new ClientQuotaAlteration(jane, List.of(
                    new ClientQuotaAlteration.Op("bogus_rate", 1.0))))).all().get();
                System.out.println("error none");
            } catch (ExecutionException e) {
                System.out.println("error " + e.getCause().getClass().getSimpleName() + ": " + e.getCause().getMessage());
            }
        }
    }
}
"""


def test_java_admin_alter_and_describe(broker, tmp_path: Path) -> None:
    error = install_java()
    if error is not None:
        pytest.fail(f"cannot install the Java client: {error}")
    source = tmp_path / "Quotas.java"
    source.write_text(JAVA_ADMIN)
    result = subprocess.run(
        ["java", "-XX:+UseSerialGC", "-Xmx256m", "-cp", java_classpath(), str(source), broker.bootstrap],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in result.stdout.splitlines()
             if line.split(" ", 1)[0] in ("contains", "only", "default-client", "removed", "error")}
    jane = "{user=jane}={producer_byte_rate=2048.0, request_percentage=12.5}"
    jane_any = "{client-id=null, user=jane}={consumer_byte_rate=4096.0}"
    assert lines["contains"] == f"[{jane_any}, {jane}]"
    assert lines["only"] == f"[{jane}]"
    assert lines["default-client"] == f"[{jane_any}]"
    assert lines["removed"] == f"[{jane_any}, {{user=jane}}={{request_percentage=12.5}}]"
    assert lines["error"] == "InvalidRequestException: Invalid configuration key bogus_rate"


def test_cluster_authorization(broker_factory) -> None:
    # An ACL authorizer and no ACL: ANONYMOUS may neither describe nor alter quotas.
    denied = broker_factory({"authorizer.class.name": "kafka.security.authorizer.AclAuthorizer"})
    response = describe(denied.port, [])
    assert response.error_code == ErrorCode.cluster_authorization_failed
    assert response.entries is None
    assert alter(denied.port, [({"user": "a"}, [("producer_byte_rate", 1.0)]),
                               ({"client-id": "b"}, [("bogus", 1.0)])]) == [
        (ErrorCode.cluster_authorization_failed, "Cluster authorization failed.")
    ] * 2
    assert json.loads((denied.data_dir / ENTITY_CONFIGS_FILE).read_text()
                      if (denied.data_dir / ENTITY_CONFIGS_FILE).exists() else "{}") == {}
    # A super user may.
    allowed = broker_factory({"authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
                              "super.users": "User:ANONYMOUS"}, name="super")
    assert alter(allowed.port, [({"user": "a"}, [("producer_byte_rate", 1.0)])]) == [(ErrorCode.none, None)]
    assert entities(describe(allowed.port, [])) == {key(user="a"): {"producer_byte_rate": 1.0}}
