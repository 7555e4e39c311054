"""The skeleton every DVC stage shares, so that `stages/<name>.py` holds only what is its own.

A stage script declares its paths (dvc.yaml's `cmd` is their only home: every path is a
required argument) and one `execute(stage) -> str` function. The skeleton parses the arguments,
applies the offline defaults, reads the params section named after the stage into the stage's
config dataclass, opens the MLflow run (same name, provenance tags) on request, shows the progress
lines of long steps on stderr, and turns a PapersimError into a one-line `error: ...` with exit status 1.
"""

import argparse
import dataclasses
import logging
import sys
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from papersim.config import load_section
from papersim.env import apply_offline_defaults
from papersim.errors import PapersimError
from papersim.lifecycle import tracking
from papersim.provenance import data_version, git_commit


@dataclass(frozen=True)
class Stage:
    """What a stage's `execute` gets: its name, its paths and its config."""

    name: str
    args: argparse.Namespace  # one Path per declared argument
    cfg: Any  # the stage's frozen config dataclass, read from params.yaml

    def run(self, inputs: Mapping[str, str | Path],
            tags: Mapping[str, str] | None = None) -> AbstractContextManager[tracking.StageRun]:
        """The stage's MLflow run: its config as params, the git commit and the inputs' versions as tags."""
        provenance = {"mlflow.source.git.commit": git_commit(), **data_version(dict(inputs))}
        return tracking.stage_run(self.name, dataclasses.asdict(self.cfg), {**provenance, **(tags or {})})


def parse_stage_args(name: str, doc: str, paths: Mapping[str, str], optional: tuple[str, ...],
                     argv: list[str] | None, section: str = "") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=doc.strip().split("\n")[0])
    parser.add_argument("--params", type=Path, required=True, help=f"params file (section `{section or name}`)")
    for flag, text in paths.items():
        parser.add_argument(f"--{flag}", type=Path, required=flag not in optional, default=None, help=text)
    return parser.parse_args(argv)


def run_stage(name: str, config: type, doc: str, paths: Mapping[str, str], execute: Callable[[Stage], str],
              argv: list[str] | None = None, optional: tuple[str, ...] = (), section: str = "") -> int:
    """Run one stage: `paths` maps each argument (`--<flag>`) to its help; those in `optional` may be
    left out (None). The config is the params section named after the stage unless `section` names
    another (a stage that prepares that section's stage). `execute` returns the summary line(s) printed
    on success."""
    section = section or name
    args = parse_stage_args(name, doc, paths, optional, argv, section)
    apply_offline_defaults()
    try:
        with library_log(name):
            summary = execute(Stage(name, args, load_section(args.params, section, config)))
    except PapersimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if summary:
        print(summary.rstrip("\n"))
    return 0


class _Stderr(logging.StreamHandler):
    """Writes to the sys.stderr of the moment (a test's captured stream), flushed line by line."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _) -> None:
        pass


@contextmanager
def library_log(name: str) -> Iterator[None]:
    """While the stage runs, papersim's log lines (progress of long steps, papersim.progress) go to stderr as
    `<stage>: <line>`: DVC shows a stage's stderr, the retrain flow passes it on. Not propagated, so a root
    handler configured elsewhere cannot print them twice."""
    logger = logging.getLogger("papersim")
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(f"{name}: %(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def split_timings(report: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Take the wall-clock measurements out of a report: they differ run to run, so they go to the stage's
    MLflow run and a sibling file (timings_path), never into what DVC records (dvc.lock stays reproducible)."""
    return {k: report.pop(k) for k in keys if k in report}


def timings_path(report: Path) -> Path:
    """`reports/train.json` -> `reports/train.timings.json` (gitignored, not a DVC output)."""
    return Path(report).with_name(f"{Path(report).stem}.timings.json")


def require(present: bool, path: Path, what: str, stage: str) -> None:
    """Fail before any work when the output of an earlier stage is missing, naming that stage."""
    if not present:
        raise PapersimError(f"{path}: {what}; run the {stage} stage first (`dvc repro {stage}`)")


def require_files(paths: list[Path], advice: str) -> None:
    """Fail before any work when inputs are missing, naming all of them."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise PapersimError(f"{', '.join(missing)}: not found; {advice}")


def stage_command(root: Path, name: str, replace: Mapping[str, str] | None = None) -> list[str]:
    """The stage's command as `root`/dvc.yaml declares it, with the values of some `--flag`s replaced
    (e.g. outputs into a scratch folder): dvc.yaml stays the one home of the stage's paths."""
    import shlex

    import yaml

    stages = yaml.safe_load((Path(root) / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    if name not in stages:
        raise PapersimError(f"{Path(root) / 'dvc.yaml'}: no stage {name!r}")
    cmd = shlex.split(stages[name]["cmd"])
    for flag, value in (replace or {}).items():
        if f"--{flag}" in cmd:
            cmd[cmd.index(f"--{flag}") + 1] = value
        else:
            cmd += [f"--{flag}", value]
    return cmd
