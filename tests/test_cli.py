import json
import subprocess
import sys

import pytest

from papersim.cli import build_parser, main
from papersim.config import check_params
from papersim.errors import PapersimError
from tests.conftest import REPO

SUBCOMMANDS = ["repro", "check-params", "summary", "search", "similar", "registry"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: papersim {command}" in capsys.readouterr().out


def test_parser_knows_exactly_the_documented_subcommands():
    actions = [a for a in build_parser()._actions if a.dest == "command"]
    assert sorted(actions[0].choices) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("stage", ["ingest", "mine_pairs", "train", "evaluate", "build_index"])
def test_stage_modules_have_help(stage):
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--help"], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0 and "--params" in result.stdout


def test_the_shipped_params_file_is_valid():
    assert check_params(REPO / "params.yaml") == ["ingest", "mine_pairs", "train", "evaluate", "build_index", "retrain"]


def test_check_params_rejects_unknown_sections_and_keys(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("ingest:\n  sources: [{path: a.jsonl}]\n  colour: red\n")
    assert main(["check-params", "--params", str(bad)]) == 1
    assert "unknown key(s) 'colour'" in capsys.readouterr().err
    bad.write_text("ingestt: {}\n")
    with pytest.raises(PapersimError, match=r"unknown section\(s\) ingestt"):
        check_params(bad)


def test_summary_reads_the_reports_and_says_what_to_do_without_them(tmp_path, capsys):
    assert main(["summary", "--root", str(tmp_path)]) == 1
    assert "run the pipeline first" in capsys.readouterr().err
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/ingest.json").write_text(json.dumps({
        "rows_read": {"a": 3}, "rows_read_total": 3, "duplicates_merged": 1,
        "rejected": {"abstract_length": 1, "id_unique": 0}, "rejected_total": 1, "rows_written": 1,
    }))
    assert main(["summary", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "rows read          3 (a 3)" in out and "rejected           1 (by rule: abstract_length 1)" in out
