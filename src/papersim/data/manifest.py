"""The sources manifest: every file the ingest stage reads, in reading order, with its content's MD5.

dvc.yaml cannot list params.yaml's sources as the ingest stage's deps (any number, anywhere on disk),
so the `sources` stage writes this manifest on every `dvc repro` and ingest depends on it: DVC reruns
ingest exactly when a source's content, the list of sources or a folder's file set changes. The
manifest holds no times, so touching a file changes nothing; the digest cache keyed by each file's
stat only spares re-reading an unchanged corpus.
"""

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from papersim.data.sources import SourceSpec, resolve_format, source_files
from papersim.provenance import file_md5

CACHE_VERSION = 1  # a cache of another layout is ignored (re-hashed), never misread
# A file modified this recently may be modified again within its timestamp's resolution (kernel
# timestamps tick every few ms) with the same size: its digest is not cached, as git's "racy" entries.
RACY_S = 2.0


def source_manifest(specs: Sequence[SourceSpec], digest: Callable[[Path], str] = file_md5) -> dict:
    """{"sources": [{name, path, format, files: [{path, md5}]}]} in params.yaml's order; a file's path in
    the form params.yaml gives its source (relative or absolute). A missing source fails before any hashing."""
    for spec in specs:
        resolve_format(spec)
    entries = []
    for spec in specs:
        fmt, files = source_files(spec)
        entries.append({"name": spec.name, "path": spec.path, "format": fmt,
                        "files": [{"path": f.as_posix(), "md5": digest(f)} for f in files]})
    return {"sources": entries}


def _signature(stat: os.stat_result) -> list[int]:
    # ctime and inode too: a copy that keeps the mtime (cp -p, rsync -t) or a file replaced by a rename
    # still looks changed.
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


class DigestCache:
    """MD5s of files by absolute path, each valid while the file's size, mtime, ctime and inode are
    those it was hashed with. Counts what it hashed and what it reused."""

    def __init__(self, entries: dict[str, dict] | None = None, now: Callable[[], float] = time.time) -> None:
        self.entries = dict(entries or {})  # absolute path -> {"stat": signature, "md5": digest}
        self.now = now
        self.hashed = self.reused = 0

    @classmethod
    def read(cls, path: Path) -> "DigestCache":
        """The cache `to_dict` wrote to `path`; a missing or unreadable one is empty (it only saves time)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        valid = isinstance(data, dict) and data.get("version") == CACHE_VERSION and isinstance(data.get("files"), dict)
        return cls(data["files"] if valid else None)

    def digest(self, path: Path) -> str:
        key = str(Path(path).resolve())
        stat = os.stat(key)
        entry = self.entries.get(key)
        if isinstance(entry, dict) and entry.get("stat") == _signature(stat):
            self.reused += 1
            return entry["md5"]
        self.hashed += 1
        md5 = file_md5(Path(key))
        after = os.stat(key)
        if _signature(after) == _signature(stat) and self.now() - after.st_mtime_ns / 1e9 > RACY_S:
            self.entries[key] = {"stat": _signature(after), "md5": md5}
        else:
            self.entries.pop(key, None)
        return md5

    def to_dict(self) -> dict:
        """The entries of files that still exist (a removed corpus leaves no trace)."""
        return {"version": CACHE_VERSION, "files": {k: v for k, v in sorted(self.entries.items()) if os.path.isfile(k)}}
