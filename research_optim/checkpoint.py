"""Checkpoints: written atomically, the previous one kept, read back with one clear message when damaged.

``<run_dir>/checkpoints/`` holds ``last.pt`` (the newest) and ``prev.pt`` (the one before it). A save writes
``.last.pt.tmp.<host>.<pid>``, fsyncs it, then renames ``last.pt`` to ``prev.pt`` and the temp file to ``last.pt``,
so a crash at any instant leaves a complete checkpoint behind: ``last.pt``, or ``prev.pt`` when the crash falls
between the two renames or ``last.pt`` was damaged later. Temp files of dead writers are removed on the next start.
The RNG state of every rank travels in the checkpoint (``rng.snapshot``), for bit-exact resume.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch

from research_optim.errors import UserError

log = logging.getLogger(__name__)

LAST, PREV = "last.pt", "prev.pt"
DAMAGED = "last.pt.damaged"  # a last.pt that could not be read, moved aside so the next save keeps prev.pt
TEMP_PREFIX = f".{LAST}.tmp."


class CorruptCheckpoint(UserError):
    pass


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(obj: Any, directory: Path) -> Path:
    """Write ``obj`` as ``directory/last.pt``, keeping the previous one as ``prev.pt``; a reader (or a crash)
    never sees a half-written file."""
    directory.mkdir(parents=True, exist_ok=True)
    last = directory / LAST
    tmp = directory / f"{TEMP_PREFIX}{socket.gethostname()}.{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    if last.exists():
        os.replace(last, directory / PREV)
    os.replace(tmp, last)
    _fsync_directory(directory)
    return last


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(directory: Path) -> None:
    """Delete the temp files of saves killed mid-write — only those of dead processes on this host."""
    host = socket.gethostname()
    for path in directory.glob(f"{TEMP_PREFIX}*"):
        writer_host, _, pid = path.name[len(TEMP_PREFIX):].rpartition(".")
        if writer_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            log.info("removed %s, left by a save that was killed", path.name)
        elif writer_host != host:
            log.warning("%s was left by a save on host %s; delete it if no process there writes this run", path,
                        writer_host)


def load(path: Path) -> dict[str, Any]:
    """The whole checkpoint (our own files: they hold RNG states and numpy arrays, which the safe loader refuses)."""
    return _read(path, mmap=False)


def peek(path: Path) -> dict[str, Any]:
    """The checkpoint with its tensors memory-mapped, not read: a cheap look at its metadata and structure."""
    return _read(path, mmap=True)


def _read(path: Path, mmap: bool) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as err:  # noqa: BLE001 — truncated zip, bad pickle, ...: all mean "this file is damaged"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CorruptCheckpoint(f"checkpoint {path} cannot be read ({reason})") from None


class Restored(NamedTuple):
    path: Path
    checkpoint: dict[str, Any]
    passed_over: str | None  # why last.pt was not used (missing or damaged), when prev.pt was


def newest_readable(directory: Path, read: Callable[[Path], dict[str, Any]] = load) -> Restored | None:
    """The newest checkpoint that can be read — ``last.pt``, else ``prev.pt`` — or None when there is none.

    Raises :class:`CorruptCheckpoint` naming the file and the choices when checkpoints exist but none can be read.
    """
    last, prev = directory / LAST, directory / PREV
    damaged: CorruptCheckpoint | None = None
    if last.exists():
        try:
            return Restored(last, read(last), None)
        except CorruptCheckpoint as err:
            damaged = err
    if prev.exists():
        try:
            why = str(damaged) if damaged else f"{last} is missing (a save was interrupted between its renames)"
            return Restored(prev, read(prev), why)
        except CorruptCheckpoint as err:
            damaged = damaged or err
    if damaged is not None:
        raise CorruptCheckpoint(f"{damaged}, and no earlier checkpoint can be read. Start this run over with "
                                "run.resume=false (its checkpoints and metrics are replaced), or restore the file.")
    return None


def set_damaged_aside(directory: Path) -> Path | None:
    """Move an unreadable ``last.pt`` out of the rotation (to ``last.pt.damaged``), so the next save keeps the
    good ``prev.pt``; returns where it went."""
    last = directory / LAST
    if not last.exists():
        return None
    os.replace(last, directory / DAMAGED)
    return directory / DAMAGED


def discard(directory: Path) -> list[Path]:
    """Delete a run's checkpoints (a fresh start of the same config); returns what was deleted."""
    gone = [directory / name for name in (LAST, PREV, DAMAGED) if (directory / name).exists()]
    for path in gone:
        path.unlink()
    return gone
