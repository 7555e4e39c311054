"""MkDocs hook: numbers in the pages come from the files that hold them, read at build time.

- `{{ evaluate: cranfield/served/ndcg@10 | .4f }}` is that value of reports/evaluate.json, formatted with
  the Python format spec after `|` (none: as stored). The path walks the report's keys, joined by `/`
  (a key that itself holds `/`, like train.json's `base/precision@10`, is found too); list items by index.
- `{{ benchmark: fusion }}` is the recorded output of benchmarks/results/fusion.md (its table, command
  and date), followed by a link to the benchmark's whole page.

A page therefore never states a number its report no longer holds, and a path that is not in the report
stops the build with the page and the placeholder named.
"""

import json
import posixpath
import re
from functools import lru_cache
from pathlib import Path

from mkdocs.exceptions import PluginError

REPORTS = "reports"
RESULTS = "benchmarks/results"
BEGIN = "<!-- recorded output:"  # as benchmarks/record.py writes them
END = "<!-- end of recorded output -->"
PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*:\s*([^|}]+?)\s*(?:\|\s*([^}]*?)\s*)?\}\}")


@lru_cache(maxsize=None)
def _report(root: str, name: str) -> dict:
    path = Path(root) / REPORTS / f"{name}.json"
    if not path.is_file():
        raise PluginError(f"{path}: no such report (placeholders name a reports/<stage>.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def lookup(data, path: str):
    """The value at `path` (keys joined by '/'); the longest run of segments that is a key wins."""
    parts = [p.strip() for p in path.split("/")]
    value, i = data, 0
    while i < len(parts):
        if isinstance(value, list):
            value, i = value[int(parts[i])], i + 1
            continue
        for j in range(len(parts), i, -1):
            key = "/".join(parts[i:j])
            if isinstance(value, dict) and key in value:
                value, i = value[key], j
                break
        else:
            raise KeyError("/".join(parts[: i + 1]))
    return value


def recorded(root: str, name: str) -> str:
    """The part of benchmarks/results/<name>.md between the record markers."""
    path = Path(root) / RESULTS / f"{name}.md"
    if not path.is_file():
        raise PluginError(f"{path}: no such benchmark result")
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise PluginError(f"{path}: no recorded output (the markers benchmarks/record.py writes)")
    block = text.split(BEGIN, 1)[1].split("-->", 1)[1]
    return block.split(END, 1)[0].strip()


def on_pre_build(config) -> None:
    _report.cache_clear()  # `mkdocs serve` rebuilds in one process: read the reports again


def on_page_markdown(markdown: str, page, config, files) -> str:
    root = str(Path(config["config_file_path"]).parent)
    here = posixpath.dirname(page.file.src_uri)

    def fill(match: re.Match) -> str:
        kind, path, spec = match.group(1), match.group(2), match.group(3) or ""
        if kind == "benchmark":
            link = posixpath.relpath(f"results/benchmarks/{path}.md", here or ".")
            return f"{recorded(root, path)}\n\n[The whole {path} benchmark: setup and notes]({link})"
        try:
            value = lookup(_report(root, kind), path)
            return format(value, spec)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise PluginError(f"{page.file.src_uri}: {match.group(0)}: not in reports/{kind}.json "
                              f"or not formattable ({type(exc).__name__}: {exc})") from None

    return PLACEHOLDER.sub(fill, markdown)
