"""A source as params.yaml names it: its format found from the path, BEIR's own field names."""

import pytest

from papersim.data.sources import SourceSpec, resolve_format
from papersim.errors import PapersimError
from tests.conftest import read_all, write_jsonl


def test_beir_folder_uses_its_id_title_text_fields(tmp_path):
    write_jsonl(tmp_path / "cran" / "corpus.jsonl", [{"_id": "7", "title": "wing", "text": "wing flutter"}])
    spec = SourceSpec(str(tmp_path / "cran"), id_prefix="cran:")
    assert resolve_format(spec) == "beir"
    _, (batch,) = read_all(spec)
    assert batch.paper_id == ["cran:7"] and batch.abstract == ["wing flutter"]


def test_missing_path_and_unknown_extension_are_errors(tmp_path):
    with pytest.raises(PapersimError, match=r"nope.jsonl: no such file or folder \(source 'nope'"):
        resolve_format(SourceSpec(str(tmp_path / "nope.jsonl")))
    (tmp_path / "a.xml").write_text("<a/>")
    with pytest.raises(PapersimError, match="does not know the extension '.xml'"):
        resolve_format(SourceSpec(str(tmp_path / "a.xml")))
