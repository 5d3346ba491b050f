"""What the bench scripts read of running processes from Linux's /proc: a process with its descendants (a
server's inference process, `prepare`'s workers), their CPU time thread by thread, their memory, and the CPU
time the host took from this virtual machine."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(stat_file: Path) -> float:
    """User + system CPU time so far from a /proc `stat` file (a process's or one thread's)."""
    fields = stat_file.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """The process and its descendants, children of any of their threads; one that ends meanwhile is skipped."""
    tree = [pid]
    for parent in tree:
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                tree += [int(child) for child in (task / "children").read_text().split()]
            except FileNotFoundError:
                continue
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU time so far of the process and its descendants, all their threads."""
    total = 0.0
    for process in process_tree(pid):
        try:
            total += cpu_seconds(Path(f"/proc/{process}/stat"))
        except FileNotFoundError:
            continue
    return total


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of the process and its descendants, by process/thread id."""
    seconds = {}
    for process in process_tree(pid):
        try:
            threads = os.listdir(f"/proc/{process}/task")
        except FileNotFoundError:
            continue
        for tid in threads:
            try:
                seconds[f"{process}/{tid}"] = cpu_seconds(Path(f"/proc/{process}/task/{tid}/stat"))
            except FileNotFoundError:
                continue
    return seconds


def _field_kib(process: int | str, field: str) -> int:
    """A memory field of /proc/PROCESS/status in KiB (0 for a process that ended meanwhile)."""
    try:
        lines = Path(f"/proc/{process}/status").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(int(line.split()[1]) for line in lines if line.startswith(f"{field}:"))


def _status_kib(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status (in KiB) added up over the process and its descendants."""
    return sum(_field_kib(process, field) for process in process_tree(pid))


def peak_memory_mb(pid: int) -> float:
    """Each process's peak resident memory (VmHWM), added up over the process and its descendants, in MiB
    (the serving tables' "MB")."""
    return _status_kib(pid, "VmHWM") / 1024


def largest_peak_memory_mb(pid: int) -> float:
    """The largest peak resident memory (VmHWM) of one process among the process and its descendants, in MB
    of 10^6 bytes (the `prepare` tables' unit)."""
    return max(_field_kib(process, "VmHWM") for process in process_tree(pid)) * 1024 / 1e6


def own_peak_memory_mib() -> float:
    """This process's peak resident memory (VmHWM), in MiB. Not `ru_maxrss`: Linux carries it over from the
    parent across fork and exec, so a child that a large process started would report that process's peak."""
    return _field_kib("self", "VmHWM") / 1024


def resident_mb(pid: int) -> float:
    """The resident memory (VmRSS) the process and its descendants hold now, added up, in MB of 10^6 bytes
    (the `prepare` tables' unit)."""
    return _status_kib(pid, "VmRSS") * 1024 / 1e6


def cpu_ticks() -> tuple[int, int]:
    """(stolen, all) CPU ticks of this machine so far, from /proc/stat: a virtual machine's host may
    take CPU time from it, which slows every figure."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return ticks[7], sum(ticks)


def stolen_share(before: tuple[int, int]) -> float:
    """The share of this machine's CPU ticks since `before` (a `cpu_ticks()`) that the host took."""
    (stolen, total), (stolen_before, total_before) = cpu_ticks(), before
    return (stolen - stolen_before) / max(1, total - total_before)
