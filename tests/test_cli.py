import json

import pytest

from papersim.cli import main
from papersim.config import check_params
from papersim.errors import PapersimError

SUBCOMMANDS = ["repro", "check-params", "summary", "search", "similar", "registry"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: papersim {command}" in capsys.readouterr().out


def test_a_mistyped_subcommand_exits_2_and_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serch", "flutter"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'serch'" in err and "'search'" in err


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
