from dataclasses import dataclass

import pytest
import yaml

from papersim.config import build_config, check_params, load_section, override_params
from papersim.data.ingest import IngestConfig
from papersim.errors import PapersimError
from tests.conftest import REPO


@dataclass(frozen=True)
class Demo:
    size: int
    rate: float = 0.1


def test_builds_the_dataclass_from_a_mapping():
    assert build_config(Demo, {"size": 3}, "params.yaml: demo") == Demo(3, 0.1)


def test_unknown_key_is_an_error_naming_it_and_the_allowed_keys():
    with pytest.raises(PapersimError, match=r"params.yaml: demo: unknown key\(s\) 'sise'; allowed keys: size, rate"):
        build_config(Demo, {"sise": 3}, "params.yaml: demo")


def test_missing_required_key_is_an_error():
    with pytest.raises(PapersimError, match=r"missing required key\(s\) 'size'"):
        build_config(Demo, {}, "params.yaml: demo")


def test_unknown_key_inside_a_source_is_named_with_its_position(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  sources:\n    - {path: a.jsonl, fromat: jsonl}\n")
    with pytest.raises(PapersimError, match=r"params.yaml: ingest: sources\[0\]: unknown key\(s\) 'fromat'"):
        load_section(params, "ingest", IngestConfig)


def test_unknown_format_is_rejected_before_any_reading(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  sources:\n    - {path: a.xml, format: xml}\n")
    with pytest.raises(PapersimError, match=r"unknown format 'xml' for a.xml; choose one of auto, jsonl, csv"):
        load_section(params, "ingest", IngestConfig)


def test_missing_section_and_missing_file_are_errors(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train: {}\n")
    with pytest.raises(PapersimError, match="no 'ingest' section"):
        load_section(params, "ingest", IngestConfig)
    with pytest.raises(PapersimError, match="params file not found"):
        load_section(tmp_path / "nope.yaml", "ingest", IngestConfig)


def test_bad_values_are_errors():
    with pytest.raises(PapersimError, match="on_invalid must be 'fail' or 'quarantine'"):
        build_config(IngestConfig, {"sources": [{"path": "a.jsonl"}], "on_invalid": "ignore"}, "ingest")
    with pytest.raises(PapersimError, match="names must be unique"):
        build_config(IngestConfig, {"sources": [{"path": "x/a.jsonl"}, {"path": "y/a.jsonl"}]}, "ingest")


def test_overrides_keep_comments_and_reject_unknown_keys():
    from papersim.config import override_params, parse_override

    text = "train:\n  max_steps: 30   # a comment\n  lr: 0.1\nevaluate:\n  systems: [bm25]\n"
    out = override_params(text, dict([parse_override("train.max_steps=0"),
                                      parse_override("evaluate.systems=[bm25, base]")]))
    assert "max_steps: 0" in out and "# a comment" in out and "lr: 0.1" in out
    assert yaml.safe_load(out)["evaluate"]["systems"] == ["bm25", "base"]
    with pytest.raises(PapersimError, match="train has no key 'max_step'"):
        override_params(text, {"train.max_step": 1})
    with pytest.raises(PapersimError, match="no section 'trian'"):
        override_params(text, {"trian.max_steps": 1})
    with pytest.raises(PapersimError, match="section.key=value"):
        parse_override("max_steps=3")


def test_the_shipped_params_file_is_valid():
    assert check_params(REPO / "params.yaml") == ["ingest", "mine_pairs", "train", "evaluate", "build_index", "retrain"]


def test_a_profile_file_is_a_set_of_overrides_and_a_bad_one_says_what_it_should_be(tmp_path):
    from papersim.config import read_profile

    profile = tmp_path / "quality.yaml"
    profile.write_text("train:\n  max_steps: 300\n  loss: colisting\nmine_pairs:\n  max_colisted_per_paper: 10\n")
    assert read_profile(profile) == {"train.max_steps": 300, "train.loss": "colisting",
                                     "mine_pairs.max_colisted_per_paper": 10}
    (tmp_path / "bad.yaml").write_text("train: 300\n")
    with pytest.raises(PapersimError, match="maps sections to"):
        read_profile(tmp_path / "bad.yaml")
    with pytest.raises(PapersimError, match="no such profile file"):
        read_profile(tmp_path / "missing.yaml")
    shipped = REPO / "profiles/quality.yaml"  # every key of the shipped profile is a real params.yaml key
    override_params((REPO / "params.yaml").read_text(), read_profile(shipped))
