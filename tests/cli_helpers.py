"""Helpers for the tests of kwire's client subcommands: run `python -m kwire ...` as a
subprocess (as a user or a script would) and read the tables it prints."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import free_port

CLI_TIMEOUT = 60
# rich's SIMPLE_HEAD box: the line under a table's header.
_RULE = re.compile(r"^[─━-]+$")


def run_cli(
    *args: str, timeout: float = CLI_TIMEOUT, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m kwire ARGS` to its end: stdout, stderr and the exit code (piped, so
    tables are not wrapped)."""
    return subprocess.run(
        [sys.executable, "-m", "kwire", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def run_cli_concurrently(
    runs: list[list[str]], timeout: float = CLI_TIMEOUT
) -> list[subprocess.CompletedProcess[str]]:
    """Several `python -m kwire` runs at once (each waits out its own --timeout), in order."""
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda args: run_cli(*args, timeout=timeout), runs))


def kwire(
    bootstrap: str, *args: str, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """A client subcommand against `bootstrap` (--bootstrap-server appended)."""
    return run_cli(*args, "--bootstrap-server", bootstrap, timeout=timeout)


def cli(
    bootstrap: str, line: str, *extra: str, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """`kwire` with a command line as a shell would split it (`"topic create t --partitions
    3"`), then `extra` arguments as they are, against `bootstrap`."""
    return kwire(bootstrap, *shlex.split(line), *extra, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a run that must have succeeded (else an assertion with its stderr)."""
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The stderr of a run that must have exited `code` naming every fragment."""
    assert result.returncode == code, (
        f"exit {result.returncode}, not {code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in stderr:\n{result.stderr}"
    return result.stderr


def closed_bootstrap() -> str:
    """A loopback address where nothing listens."""
    return f"127.0.0.1:{free_port()}"


def parse_tables(text: str) -> list[list[dict[str, str]]]:
    """Every table of a subcommand's output (common.print_table: a header line of column
    names, a rule line, one line per row, columns left-aligned): a list of rows, each
    {column: cell}. Cells are cut at the header's column starts, so an empty cell reads
    as ''."""
    lines = text.splitlines()
    tables: list[list[dict[str, str]]] = []
    i = 0
    while i + 1 < len(lines):
        if not (_RULE.match(lines[i + 1].strip()) and lines[i].strip()):
            i += 1
            continue
        header = lines[i]
        starts = [m.start() for m in re.finditer(r"\S+", header)]
        names = header.split()
        rows: list[dict[str, str]] = []
        i += 2
        while i < len(lines) and lines[i].strip():
            line = lines[i]
            bounds = [*starts[1:], None]
            rows.append(
                {
                    name: line[start:end].strip()
                    for name, start, end in zip(names, starts, bounds, strict=True)
                }
            )
            i += 1
        tables.append(rows)
    return tables


def parse_table(text: str) -> list[dict[str, str]]:
    """The one table of a subcommand's output."""
    tables = parse_tables(text)
    assert len(tables) == 1, f"{len(tables)} tables in:\n{text}"
    return tables[0]


def write_properties(path: Path, values: dict[str, str]) -> Path:
    """A Java client properties file (a --command-config), as kafka-topics.sh reads one."""
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path
