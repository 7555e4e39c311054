"""A benchmark's final table, kept as benchmarks/results/<name>.md with the command and the date it came from.

    with record("ann"):
        print(table)  # printed as before, and recorded

Only the part of the file between the two markers is rewritten, so the notes written under it (how to
read the numbers, earlier runs) stay. A block that raises records nothing. The documentation site shows
these files as they are (docs/gen_pages.py). BENCHMARK_RESULTS=DIR records into another folder, e.g. for
a trial run that should not replace the recorded one.
"""

import contextlib
import datetime
import io
import os
import platform
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BEGIN = "<!-- recorded output: benchmarks/record.py rewrites from here to the end marker on every run -->"
END = "<!-- end of recorded output -->"


class _Tee(io.TextIOBase):
    """Writes to every stream it holds: the terminal and the record."""

    def __init__(self, *streams: io.TextIOBase) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def command() -> str:
    """How this benchmark was started, as one would type it at the repository root."""
    python = Path(sys.executable)
    python_text = str(python.relative_to(REPO)) if python.is_relative_to(REPO) else "python"
    script = Path(sys.argv[0]).resolve()
    script_text = str(script.relative_to(REPO)) if script.is_relative_to(REPO) else sys.argv[0]
    return shlex.join([python_text, script_text, *sys.argv[1:]])


def write_result(name: str, output: str, folder: Path | None = None) -> Path:
    """Replace the recorded part of `folder/name.md` with `output`, keeping the rest; returns the file."""
    folder = Path(folder or os.environ.get("BENCHMARK_RESULTS") or RESULTS)
    path = folder / f"{name}.md"
    stamp = (f"Recorded {datetime.date.today().isoformat()} by `{command()}` "
             f"({os.cpu_count()} CPU cores, Python {platform.python_version()}).")
    block = f"{BEGIN}\n{stamp}\n\n{output.strip()}\n\n{END}"
    old = path.read_text(encoding="utf-8") if path.is_file() else f"# {name}\n\n{BEGIN}\n{END}\n\n## Notes\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:  # a file whose markers were edited away: keep its text under the new record
        text = f"# {name}\n\n{block}\n\n{old}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # a crash mid-write leaves the old file whole
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def record(name: str) -> Iterator[None]:
    """Print as usual inside the block; on success the printed text becomes the recorded output of `name`."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, buffer)):
        yield
    path = write_result(name, buffer.getvalue())
    print(f"\nrecorded in {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
