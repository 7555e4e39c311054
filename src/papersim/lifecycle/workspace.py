"""The retraining flow's hold on a repository: one run at a time, and params overrides for one run.

A file lock serialises runs (its owner file names the holder's pid and start time); overrides are
written into params.yaml for the duration of a run, keeping its comments, and the file is restored
afterwards, so that DVC sees exactly the params the stages use.
"""

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from papersim.atomic import atomic_outputs
from papersim.config import override_params
from papersim.errors import PapersimError

LOCK = ".papersim/retrain.lock"
OWNER = ".papersim/retrain.owner.json"


@contextmanager
def retrain_lock(root: Path, timeout_s: float) -> Iterator[None]:
    """One retrain at a time per repository; the holder's pid and start time name the culprit."""
    lock_path, owner = root / LOCK, root / OWNER
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        holder = owner.read_text(encoding="utf-8").strip() if owner.is_file() else "unknown holder"
        raise PapersimError(f"another retrain is running in {root} ({holder}); waited {timeout_s:.0f} s. "
                            "Wait for it, or raise retrain.lock_timeout_s") from None
    try:
        owner.write_text(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                  time.gmtime())}))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


@contextmanager
def params_overrides(path: Path, overrides: dict[str, Any]) -> Iterator[None]:
    """params.yaml with `section.key` overrides for the duration of the run, then restored."""
    if not overrides:
        yield
        return
    original = path.read_text(encoding="utf-8")
    changed = override_params(original, overrides, str(path))
    with atomic_outputs(path) as (tmp,):
        tmp.write_text(changed, encoding="utf-8")
    try:
        yield
    finally:
        with atomic_outputs(path) as (tmp,):
            tmp.write_text(original, encoding="utf-8")
