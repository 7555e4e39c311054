"""The stage skeleton: required paths from dvc.yaml, the params section, the MLflow run, one-line errors."""

import ast
import dataclasses
import logging
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from papersim.errors import PapersimError
from papersim.provenance import file_md5
from papersim.stage import Stage, run_stage, stage_command
from tests.conftest import REPO

STAGES = ("sources", "ingest", "mine_pairs", "train", "evaluate", "build_index")


@dataclasses.dataclass(frozen=True)
class CountConfig:
    words: int = 3  # how many words to keep


def count_words(stage: Stage) -> str:
    text = stage.args.text.read_text(encoding="utf-8")
    if not text.strip():
        raise PapersimError(f"{stage.args.text}: empty text")
    with stage.run({"text": stage.args.text}) as run:
        run.log_metrics({"words": min(len(text.split()), stage.cfg.words)})
    return f"count: {min(len(text.split()), stage.cfg.words)} words"


def run_count(tmp_path: Path, text: str, params: str = "count: {words: 2}\n", argv: list[str] | None = None) -> int:
    (tmp_path / "params.yaml").write_text(params)
    (tmp_path / "in.txt").write_text(text)
    argv = argv if argv is not None else ["--params", str(tmp_path / "params.yaml"), "--text", str(tmp_path / "in.txt")]
    return run_stage("count", CountConfig, "Stage `count`: words in a text.", {"text": "input text"}, count_words, argv)


def test_a_stage_reads_its_section_and_logs_one_run_named_after_it(tmp_path, tracking, capsys):
    assert run_count(tmp_path, "one two three four") == 0
    assert capsys.readouterr().out == "count: 2 words\n"
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name(tracking).experiment_id])
    assert [r.info.run_name for r in runs] == ["count"]
    assert runs[0].data.params == {"words": "2"} and runs[0].data.metrics == {"words": 2.0}
    tags = runs[0].data.tags
    assert tags["data_md5.text"] == file_md5(tmp_path / "in.txt") and tags["mlflow.source.git.commit"]


def test_every_path_is_a_required_argument(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_count(tmp_path, "text", argv=["--params", str(tmp_path / "params.yaml")])
    assert exit_.value.code == 2
    assert "the following arguments are required: --text" in capsys.readouterr().err


def test_errors_are_one_line_and_exit_1(tmp_path, tracking, capsys):
    assert run_count(tmp_path, "   ") == 1
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'in.txt'}: empty text\n"
    assert run_count(tmp_path, "text", params="count: {word: 2}\n") == 1
    assert "count: unknown key(s) 'word'" in capsys.readouterr().err


def test_progress_lines_reach_stderr_once_with_the_stage_name(tmp_path, capsys, caplog):
    from papersim.progress import Progress

    def count_slowly(stage: Stage) -> str:
        with Progress("counting", total=3, unit="words", interval=0.0) as progress:
            progress.advance(2)
            progress.advance(1)
        return "count: 3 words"

    (tmp_path / "params.yaml").write_text("count: {words: 2}\n")
    (tmp_path / "in.txt").write_text("one two three")
    logging.getLogger().addHandler(root := logging.StreamHandler())  # as a flow that configures logging
    try:
        argv = ["--params", str(tmp_path / "params.yaml"), "--text", str(tmp_path / "in.txt")]
        assert run_stage("count", CountConfig, "Stage `count`.", {"text": "input text"}, count_slowly, argv) == 0
    finally:
        logging.getLogger().removeHandler(root)
    captured = capsys.readouterr()
    assert captured.out == "count: 3 words\n"
    err = captured.err.splitlines()  # each line once: the root's handler did not print it again
    assert len(err) == 2 and err[0].startswith("count: counting 2/3 words (")
    assert err[1].startswith("count: counting 3/3 words done in ")
    assert not [r for r in caplog.records if r.name.startswith("papersim")]


def test_stage_command_is_dvc_yaml_with_flags_replaced():
    cmd = stage_command(REPO, "evaluate", {"report": "/tmp/x/evaluate.json", "champion-model": "/m"})
    assert cmd[:3] == ["python", "-m", "stages.evaluate"]
    assert cmd[cmd.index("--report") + 1] == "/tmp/x/evaluate.json"
    assert cmd[-2:] == ["--champion-model", "/m"]  # not in dvc.yaml: appended
    assert cmd[cmd.index("--papers") + 1] == "data/processed/papers.parquet"
    with pytest.raises(PapersimError, match="no stage 'evaluation'"):
        stage_command(REPO, "evaluation")


def _module_imports(path: Path) -> set[str]:
    """papersim modules imported at module level by a file (function-level imports run lazily)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("papersim"):
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("papersim")}
    return names


def _library_closure(script: Path) -> set[str]:
    src = REPO / "src"
    seen, todo = set(), [script]
    while todo:
        for name in _module_imports(todo.pop()):
            base = src / Path(*name.split("."))
            file = base.with_suffix(".py") if base.with_suffix(".py").is_file() else None
            if file is not None and file not in seen:
                seen.add(file)
                todo.append(file)
    return {str(f.relative_to(REPO)) for f in seen}


@pytest.mark.parametrize("name", STAGES)
def test_dvc_yaml_deps_cover_every_library_module_the_stage_imports(name):
    """A change to any module a stage runs must make `dvc repro` rerun it."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    assert f"stages/{name}.py" in deps
    uncovered = sorted(m for m in _library_closure(REPO / f"stages/{name}.py")
                       if not any(m == d or m.startswith(d.rstrip("/") + "/") for d in deps))
    assert uncovered == [], f"dvc.yaml stage {name}: add these deps"
