"""Looking at live processes through /proc (the harness has no helper for process groups)."""

from __future__ import annotations

from pathlib import Path


def _stat(pid_dir: Path) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process, or None if it is gone."""
    try:
        text = (pid_dir / "stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1]), int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Pids of live (not zombie) processes in process group ``pgid``."""
    members = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        stat = _stat(pid_dir)
        if stat is not None and stat[2] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(pid_dir.name))
    return members


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    stat = _stat(Path("/proc") / str(pid))
    return stat is not None and stat[0] not in ("Z", "X")
