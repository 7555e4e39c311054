"""Atomic outputs: write to a temporary sibling, move into place only when everything succeeded.

Every stage writes through this module, so a crash or a rejected input never leaves a
half-written file and never destroys the previous good output.
"""

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temp_sibling(path: Path, tag: str) -> Path:
    # Same directory, so os.replace is a rename on one filesystem (atomic on POSIX).
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _commit(tmp: Path, dest: Path) -> None:
    if tmp.is_dir() and dest.is_dir():
        # Directories cannot be swapped with one rename: move the old one aside first,
        # so the window without a valid `dest` is two renames long and never half-written.
        old = _temp_sibling(dest, "old")
        os.replace(dest, old)
        os.replace(tmp, dest)
        _remove(old)
    else:
        os.replace(tmp, dest)


@contextmanager
def atomic_outputs(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield one temporary path per output; on success move all into place, on error remove them.

    The caller creates whatever it likes at each temporary path (a file or a directory).
    Outputs are committed only after the whole block succeeded, so either all are replaced
    or none is.
    """
    dests = [Path(p) for p in paths]
    tmps = []
    for dest in dests:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmps.append(_temp_sibling(dest, "tmp"))
    try:
        yield tmps
        missing = [str(d) for t, d in zip(tmps, dests) if not (t.exists() or t.is_symlink())]
        if missing:
            raise RuntimeError(f"stage finished without writing {', '.join(missing)}")
        for tmp, dest in zip(tmps, dests):
            _commit(tmp, dest)
    finally:
        for tmp in tmps:
            _remove(tmp)


def dump_json(obj: Any, path: Path) -> None:
    """Write JSON with a stable layout (sorted keys) so DVC and git diffs stay readable."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
