"""ZooKeeper for trio, through kazoo.

kazoo has no trio handler: it runs its own threads. Nothing here lets them touch
trio state. Every call uses kazoo's asynchronous API, and its completion callback
(a kazoo thread) only posts into trio through the run's token; watches and session
state changes are posted the same way, into a channel that one trio task reads.

Calls are bounded: each waits at most `zookeeper.session.timeout.ms` plus the
connection timeout, then raises `ZkTimeout`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    ZookeeperError,
)
from kazoo.protocol.states import WatchedEvent, ZnodeStat

log = logging.getLogger(__name__)

__all__ = [
    "BadVersionError",
    "NoNodeError",
    "NodeExistsError",
    "NotEmptyError",
    "SessionEvent",
    "WatchEvent",
    "ZkSession",
    "ZkTimeout",
    "ZnodeStat",
    "ZookeeperError",
    "split_connect",
]


class ZkTimeout(Exception):
    """A ZooKeeper call did not complete in time (the session is likely gone)."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A watch fired on `path`: its data (kind "data") or children (kind "children") changed."""

    kind: str
    path: str


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """kazoo's session state: "CONNECTED", "SUSPENDED" (connection lost, session may
    live on) or "LOST" (expired: ephemeral nodes and watches are gone)."""

    state: str


def split_connect(connect: str) -> tuple[str, str]:
    """`host:port,host:port/chroot` -> (hosts, chroot or "")."""
    slash = connect.find("/")
    if slash < 0:
        return connect, ""
    chroot = connect[slash:].rstrip("/")
    return connect[:slash], chroot


class ZkSession:
    """One ZooKeeper session, used from trio.

    `events` receives WatchEvent and SessionEvent objects in the order kazoo saw
    them; the owner reads them in one task. Watches are one-shot, as ZooKeeper's:
    the owner re-reads the path with a new watch.
    """

    def __init__(self, connect: str, *, session_timeout_ms: int, connection_timeout_ms: int) -> None:
        self.hosts, self.chroot = split_connect(connect)
        self.session_timeout_ms = session_timeout_ms
        self.connection_timeout_ms = connection_timeout_ms
        self.call_timeout = (session_timeout_ms + connection_timeout_ms) / 1000
        self._token = trio.lowlevel.current_trio_token()
        send, self.events = trio.open_memory_channel[WatchEvent | SessionEvent](math.inf)
        self._send = send
        self.client: KazooClient | None = None

    # ---- posting from kazoo's threads ------------------------------------------------

    def _post(self, item: WatchEvent | SessionEvent) -> None:
        try:
            self._token.run_sync_soon(_send_nowait, self._send, item)
        except trio.RunFinishedError:
            pass  # trio is gone; nothing to tell

    def _session_listener(self, state: str) -> None:
        # kazoo thread: post only.
        self._post(SessionEvent(str(state)))

    def data_watch(self, event: WatchedEvent) -> None:
        # kazoo strips the chroot. On a lost connection it calls every watcher with no
        # path: the session events say what happened, and a resync follows.
        if event.path:
            self._post(WatchEvent("data", event.path))

    def children_watch(self, event: WatchedEvent) -> None:
        if event.path:
            self._post(WatchEvent("children", event.path))


    # ---- start and stop ---------------------------------------------------------------

    async def start(self) -> None:
        """Connect, creating the chroot first if missing (as Kafka's
        createChrootIfNecessary). Raises ZkTimeout if ZooKeeper cannot be reached
        within zookeeper.connection.timeout.ms."""
        timeout = self.connection_timeout_ms / 1000
        if self.chroot:
            try:
                await trio.to_thread.run_sync(_ensure_chroot, self.hosts, self.chroot, timeout, abandon_on_cancel=True)
            except Exception as e:
                raise ZkTimeout(f"cannot connect to ZooKeeper at {self.hosts}: {e}") from None
        client = KazooClient(
            hosts=self.hosts + self.chroot,
            timeout=self.session_timeout_ms / 1000,
            # Reconnect forever: a broker outlives a ZooKeeper restart.
            connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1.0},
            command_retry={"max_tries": 0},
        )
        client.add_listener(self._session_listener)
        try:
            await trio.to_thread.run_sync(client.start, timeout, abandon_on_cancel=True)
        except Exception as e:
            client.stop()
            client.close()
            raise ZkTimeout(f"cannot connect to ZooKeeper at {self.hosts}{self.chroot}: {e}") from None
        self.client = client

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            # Stopping closes the session at once: ephemeral nodes go now, not after the timeout.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_stop_client, client)
        self._send.close()

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.state == KazooState.CONNECTED

    # ---- calls ------------------------------------------------------------------------

    async def _await(self, async_result: Any) -> Any:
        done = trio.Event()
        token = self._token

        def completed(_: Any) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        async_result.rawlink(completed)
        with trio.move_on_after(self.call_timeout):
            await done.wait()
        if not done.is_set():
            raise ZkTimeout("ZooKeeper call timed out")
        return async_result.get_nowait()

    def _client(self) -> KazooClient:
        if self.client is None:
            raise ZkTimeout("not connected to ZooKeeper")
        return self.client

    async def get(self, path: str, *, watch: bool = False) -> tuple[bytes, ZnodeStat]:
        return await self._await(self._client().get_async(path, watch=self.data_watch if watch else None))

    async def get_or_none(self, path: str, *, watch: bool = False) -> tuple[bytes | None, ZnodeStat | None]:
        """The data and stat, or (None, None) if absent; a watch then fires on creation."""
        try:
            return await self.get(path, watch=watch)
        except NoNodeError:
            if watch:
                stat = await self.exists(path, watch=True)
                if stat is not None:  # created meanwhile
                    return await self.get_or_none(path, watch=True)
            return None, None

    async def exists(self, path: str, *, watch: bool = False) -> ZnodeStat | None:
        return await self._await(self._client().exists_async(path, watch=self.data_watch if watch else None))

    async def children(self, path: str, *, watch: bool = False) -> list[str]:
        """The children, or [] if the node does not exist (then watched for creation)."""
        try:
            return await self._await(
                self._client().get_children_async(path, watch=self.children_watch if watch else None)
            )
        except NoNodeError:
            if watch:
                await self.exists(path, watch=True)
            return []

    async def create(
        self, path: str, value: bytes = b"", *, ephemeral: bool = False, sequence: bool = False, makepath: bool = False
    ) -> str:
        return await self._await(
            self._client().create_async(path, value, ephemeral=ephemeral, sequence=sequence, makepath=makepath)
        )

    async def set(self, path: str, value: bytes, version: int = -1) -> ZnodeStat:
        return await self._await(self._client().set_async(path, value, version))

    async def delete(self, path: str, version: int = -1) -> None:
        await self._await(self._client().delete_async(path, version))

    async def delete_recursive(self, path: str) -> None:
        client = self._client()
        with trio.fail_after(self.call_timeout):
            await trio.to_thread.run_sync(_delete_recursive, client, path, abandon_on_cancel=True)

    async def ensure_path(self, path: str) -> None:
        await self._await(self._client().ensure_path_async(path))

    async def check_and_set(
        self, check_path: str, check_version: int, path: str, value: bytes, version: int
    ) -> ZnodeStat:
        """Set `path` at `version` only if `check_path` is still at `check_version`, in
        one ZooKeeper multi-op: how a controller write is fenced by /controller_epoch.
        Raises BadVersionError (or NoNodeError) when either check fails."""
        transaction = self._client().transaction()
        transaction.check(check_path, check_version)
        transaction.set_data(path, value, version)
        results = await self._await(transaction.commit_async())
        return _transaction_result(results)

    async def multi(self, build: Callable[[Any], None]) -> list[Any]:
        """One ZooKeeper multi-op, all or none: `build` adds the operations to kazoo's
        transaction. kazoo's results (created paths, stats); raises the first failed
        operation's error (BadVersionError, NodeExistsError ...)."""
        transaction = self._client().transaction()
        build(transaction)
        results = await self._await(transaction.commit_async())
        _transaction_result(results)
        return results

    async def check_and_create(
        self, check_path: str, check_version: int, creates: list[tuple[str, bytes]]
    ) -> None:
        """Create these nodes only if `check_path` is at `check_version`, all or none."""
        transaction = self._client().transaction()
        transaction.check(check_path, check_version)
        for path, value in creates:
            transaction.create(path, value)
        _transaction_result(await self._await(transaction.commit_async()))


def _transaction_result(results: list[Any]) -> Any:
    # kazoo returns exceptions in the result list: the first real one is the cause
    # (the others are RolledBackError).
    failures = [r for r in results if isinstance(r, Exception)]
    for failure in failures:
        if type(failure).__name__ != "RolledBackError":
            raise failure
    if failures:
        raise failures[0]
    return results[-1]


def _send_nowait(send: trio.MemorySendChannel[Any], item: Any) -> None:
    try:
        send.send_nowait(item)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass


def _ensure_chroot(hosts: str, chroot: str, timeout: float) -> None:
    client = KazooClient(hosts=hosts, timeout=max(timeout, 2.0))
    try:
        client.start(timeout)
        client.ensure_path(chroot)
    finally:
        client.stop()
        client.close()


def _stop_client(client: KazooClient) -> None:
    try:
        client.stop()
        client.close()
    except Exception:
        log.debug("closing the ZooKeeper client failed", exc_info=True)


def _delete_recursive(client: KazooClient, path: str) -> None:
    try:
        client.delete(path, recursive=True)
    except NoNodeError:
        pass

