"""CPU time and resident memory of a broker process (and any children) from /proc."""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may hold spaces and parentheses: split after the last ')'.
    return data[data.rindex(")") + 2:].split()


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f is None:
            continue
        kids.setdefault(int(f[1]), []).append(int(name))
    return kids


def tree(pid: int) -> list[int]:
    """pid and all its live descendants."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cpu_seconds(pid: int, include_children: bool = True) -> float:
    """utime+stime (+ reaped children's cutime+cstime) of pid and its live descendants."""
    pids = tree(pid) if include_children else [pid]
    ticks = 0
    for p in pids:
        f = _stat_fields(p)
        if f is None:
            continue
        # After "pid (comm) ": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
        ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def rss_mb(pid: int, include_children: bool = True) -> float:
    pids = tree(pid) if include_children else [pid]
    return sum(_status_kb(p, "VmRSS") for p in pids) / 1024.0


def hwm_mb(pid: int) -> float:
    """VmHWM (peak RSS) of pid itself."""
    return _status_kb(pid, "VmHWM") / 1024.0
