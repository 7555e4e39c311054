"""Atomic outputs: write to a temporary sibling, move into place only when everything succeeded.

Every stage writes through this module, so a crash or a rejected input never leaves a
half-written file and never destroys the previous good output.

Several outputs are one set: before the first of them moves into place, a journal next to the
first output lists every move, and it is removed only after the last. A process killed between
two moves leaves the journal; whoever touches the set next (the same stage writing it again,
or `sweep`, which the retraining flow runs before any stage) finishes the moves, so a reader sees
the old set or the new one, never a mix. Temporary siblings of a process that died before its
journal existed are removed, the previous outputs untouched, and so are scratch folders (`scratch_folder`).

A writer is named by its pid and its start time (in the journal and in every temporary name): a pid
alone may be reused by a newer process, which would make a dead writer's leftovers look live.
"""

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

# `started` (centiseconds) is absent from names written before start times were recorded; `.tmp-PID`
# alone is the journal record and download folder of those versions.
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<tag>tmp|old)-(?P<pid>\d+)(?:(?:-(?P<started>\d+))?-[0-9a-f]{8})?$")
_JOURNAL = re.compile(r"^\.(?P<name>.+)\.commit\.json$")
SAME_START_S = 1.0  # two processes may compute one start time up to a second apart (it counts from the boot time)


def _started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch); None when there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def _writer() -> str:
    """This process as `PID-START` (START in centiseconds, the kernel's resolution) for temporary names."""
    return f"{os.getpid()}-{round(_started(os.getpid()) * 100)}"


def _temp_sibling(path: Path, tag: str) -> Path:
    # Same directory, so os.replace is a rename on one filesystem (atomic on POSIX).
    return path.with_name(f".{path.name}.{tag}-{_writer()}-{uuid.uuid4().hex[:8]}")


def _journal(first: Path) -> Path:
    return first.with_name(f".{first.name}.commit.json")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _move(tmp: Path, dest: Path, old: Path) -> None:
    """tmp -> dest; an existing directory at dest goes to `old` first (one rename cannot swap folders)."""
    if not (tmp.exists() or tmp.is_symlink()):
        return  # moved already (a commit finished by recovery)
    if dest.is_dir() and not dest.is_symlink():
        if old.exists():
            _remove(dest)
        else:
            os.replace(dest, old)
    os.replace(tmp, dest)


def _commit(moves: list[tuple[Path, Path, Path]], journal: Path) -> None:
    """Move every (tmp, dest, old) in order, under a journal that lets a later call finish a killed commit."""
    record = _temp_sibling(journal, "tmp")  # a kill before the rename leaves a sibling `sweep` removes
    base = journal.parent
    record.write_text(json.dumps({"pid": os.getpid(), "started": _started(os.getpid()),
                                  "moves": [[os.path.relpath(p, base) for p in move] for move in moves]}),
                      encoding="utf-8")
    os.replace(record, journal)  # from here the set is committed: a kill is finished by recover()
    for tmp, dest, old in moves:
        _move(tmp, dest, old)
    for _, _, old in moves:
        _remove(old)
    journal.unlink(missing_ok=True)


def recover(journal: Path) -> list[Path]:
    """Finish the commit `journal` records (a process was killed during it). Returns the outputs."""
    base = journal.parent
    moves = [tuple(base / p for p in move) for move in json.loads(journal.read_text(encoding="utf-8"))["moves"]]
    for tmp, dest, old in moves:
        _move(tmp, dest, old)
    for _, _, old in moves:
        _remove(old)
    journal.unlink(missing_ok=True)
    return [dest for _, dest, _ in moves]


def _interrupted(journal: Path) -> bool:
    """A journal whose writer is gone (a live writer is still committing)."""
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
        return not _alive(int(record["pid"]), record.get("started"))  # no start time: a journal of an older version
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _alive(pid: int, started: float | None = None) -> bool:
    """Process `pid` is running and, when `started` is given, is the process that started then (not
    a newer one given the same pid). A zombie has exited: it writes nothing more."""
    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - float(started)) > SAME_START_S:
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _sibling_alive(found: re.Match) -> bool:
    """The writer named by a temporary name runs (a name without its start time: judged by the pid alone)."""
    started = found["started"]
    return _alive(int(found["pid"]), int(started) / 100 if started else None)


def sweep(folders: Iterable[Path]) -> list[str]:
    """Finish interrupted commits and remove temporary siblings and scratch folders left by dead processes
    in `folders` (recursively). Returns what was done, one line each."""
    done = []
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for parent, dirs, files in os.walk(folder):
            here = Path(parent)
            for name in sorted(files):
                if _JOURNAL.match(name) and (here / name).is_file() and _interrupted(here / name):
                    dests = recover(here / name)
                    done.append(f"finished an interrupted commit of {', '.join(map(str, dests))}")
            for name in sorted(dirs + files):
                found = _SIBLING.match(name)
                if found and not _sibling_alive(found) and (here / name).exists():
                    dest = here / found["name"]
                    if found["tag"] == "old" and not dest.exists():
                        os.replace(here / name, dest)  # only the previous output is left: it stays the output
                        done.append(f"restored {dest} from an interrupted commit")
                    else:
                        _remove(here / name)
                        done.append(f"removed {here / name}, left by a killed process")
            dirs[:] = [d for d in dirs if not _SIBLING.match(d)]
    return done


@contextmanager
def scratch_folder(parent: Path, label: str) -> Iterator[Path]:
    """A folder in `parent` for the block's scratch files, removed when the block ends. Named as a
    temporary sibling of `parent/label` (its writer's pid and start time), so `sweep` removes it
    when the writer was killed, and never while the writer runs."""
    folder = _temp_sibling(Path(parent) / label, "tmp")
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        _remove(folder)


@contextmanager
def atomic_outputs(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield one temporary path per output; on success move all into place, on error remove them.

    The caller creates whatever it likes at each temporary path (a file or a directory).
    Outputs are committed only after the whole block succeeded, so either all are replaced
    or none is; a commit a kill interrupted is finished first.
    """
    dests = [Path(p) for p in paths]
    tmps = []
    for dest in dests:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmps.append(_temp_sibling(dest, "tmp"))
    journal = _journal(dests[0])
    if journal.is_file() and _interrupted(journal):
        recover(journal)
    try:
        yield tmps
        missing = [str(d) for t, d in zip(tmps, dests) if not (t.exists() or t.is_symlink())]
        if missing:
            raise RuntimeError(f"stage finished without writing {', '.join(missing)}")
        _commit([(tmp, dest, _temp_sibling(dest, "old")) for tmp, dest in zip(tmps, dests)], journal)
    finally:
        for tmp in tmps:
            _remove(tmp)


def dump_json(obj: Any, path: Path) -> None:
    """Write JSON with a stable layout (sorted keys) so DVC and git diffs stay readable."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
