"""Where a run came from: the git commit and a content fingerprint of its input data."""

import hashlib
import subprocess
from pathlib import Path

CHUNK = 1 << 20  # 1 MiB reads: hashing runs at disk speed without holding files in memory


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD's commit, with '-dirty' when tracked files changed; 'unknown' outside a git repo."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def file_md5(path: Path) -> str:
    """MD5 of the file's bytes: the same value DVC 3 records for a file in dvc.lock."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def path_md5(path: str | Path) -> str:
    """MD5 of a file, or of a folder's sorted '<relative path> <md5>' listing."""
    path = Path(path)
    if path.is_file():
        return file_md5(path)
    listing = "".join(
        f"{p.relative_to(path).as_posix()} {file_md5(p)}\n" for p in sorted(path.rglob("*")) if p.is_file()
    )
    return hashlib.md5(listing.encode("utf-8")).hexdigest()


def data_version(paths: dict[str, str | Path]) -> dict[str, str]:
    """Tags naming the inputs' content: one md5 per input, and one over all of them."""
    per_input = {name: path_md5(p) for name, p in sorted(paths.items())}
    combined = hashlib.md5("".join(f"{k} {v}\n" for k, v in per_input.items()).encode()).hexdigest()
    return {"data_version": combined, **{f"data_md5.{name}": md5 for name, md5 in per_input.items()}}
