"""The documentation: `mkdocs build --strict` succeeds offline, its generated pages hold what the code,
the reports and the benchmarks hold, the site loads nothing from elsewhere, and the README stays a
short start. The site is built once for the module (a few seconds)."""

import dataclasses
import html
import importlib
import json
import os
import re
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

from papersim.config import STAGE_CONFIGS

REPO = Path(__file__).resolve().parents[1]
MKDOCS = Path(sys.executable).with_name("mkdocs")  # the virtual environment's, as the dev extra pins it
README_LIMIT = 15_000  # characters: a page a person reads before running anything


def text_of(page: Path) -> str:
    """A built page's article as plain text, whitespace collapsed."""
    doc = page.read_text(encoding="utf-8")
    article = doc[doc.index("<article"):doc.index("</article>")]
    article = re.sub(r"</?(?:code|em|strong|a|span)\b[^>]*>", "", article)  # inline: no space
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", article)).split())


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # the theme's end-of-life banner on stderr
    start = time.perf_counter()
    done = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    print(f"mkdocs build --strict: {time.perf_counter() - start:.1f} s")
    return out


def test_the_site_builds_strict_with_every_page(site):
    for page in ("index.html", "own-corpus/index.html", "reference/config/index.html",
                 "results/quality/index.html", "results/benchmarks/soak/index.html", "web_paper.png"):
        assert (site / page).is_file(), page


def test_the_config_reference_lists_every_field_of_every_stage_config_with_its_comment(site):
    doc = (site / "reference/config/index.html").read_text(encoding="utf-8")
    sections = dict(re.findall(r'<h2 id="([\w-]+)"(.*?)(?=<h2 id=|</article>)', doc, flags=re.S))
    for section, ref in STAGE_CONFIGS.items():
        module, name = ref.split(":")
        cls = getattr(importlib.import_module(module), name)
        assert section in sections, f"no section for params.yaml `{section}`"
        part = sections[section]
        nested = [arg for hint in typing.get_type_hints(cls).values() if typing.get_origin(hint) is list
                  for arg in typing.get_args(hint) if dataclasses.is_dataclass(arg)]  # ingest.sources
        for config in (cls, *nested):
            for field in dataclasses.fields(config):
                assert f"<code>{field.name}</code>" in part, f"{section}: {config.__name__}.{field.name} missing"
    # A why-comment is the source's own text: the first words of every field's trailing comment appear.
    page = text_of(site / "reference/config/index.html")
    for ref in STAGE_CONFIGS.values():
        module, name = ref.split(":")
        source = Path(importlib.import_module(module).__file__).read_text(encoding="utf-8")
        for field in dataclasses.fields(getattr(importlib.import_module(module), name)):
            comment = re.search(rf"^    {field.name}: [^#\n]*?  # (.+)$", source, flags=re.M)
            if comment:
                words = " ".join(comment.group(1).replace("`", "").split()[:5])
                assert words in page, f"{name}.{field.name}: its comment ({words!r}) is not on the page"


def test_the_quality_page_shows_the_numbers_of_the_committed_reports(site):
    report = json.loads((REPO / "reports/evaluate.json").read_text(encoding="utf-8"))
    page = text_of(site / "results/quality/index.html")
    assert f"{report['cranfield']['served']['ndcg@10']:.4f}" in page
    assert f"{report['similar_unseen']['served']['precision@10']:.4f}" in page
    assert f"{report['cranfield']['served_vs']['base']['ci_low']:+.3f}" in page
    reports = text_of(site / "results/reports/index.html")
    rows = json.loads((REPO / "reports/ingest.json").read_text(encoding="utf-8"))["rows_written"]
    assert f"{rows:,}" in reports


def test_benchmark_results_are_the_recorded_files_and_every_benchmark_has_one(site):
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py")} - {"record"}
    results = {p.stem for p in (REPO / "benchmarks/results").glob("*.md")}
    assert scripts == results, f"benchmarks without a results file: {sorted(scripts - results)}"
    fusion = (REPO / "benchmarks/results/fusion.md").read_text(encoding="utf-8")
    recorded = fusion.split("-->", 1)[1].split("<!-- end of recorded output -->")[0]
    first_row = next(line for line in recorded.splitlines() if line.startswith("| titled"))
    shown = text_of(site / "results/settings-tried/index.html")
    assert " ".join(first_row.replace("*", "").replace("|", " ").split()) in shown


def test_the_site_loads_nothing_from_another_host(site):
    for page in site.rglob("*.html"):
        doc = page.read_text(encoding="utf-8")
        external = re.findall(r'<(?:script|img|iframe)[^>]+src="(?:https?:)?//[^"]+"|'
                              r'<link[^>]+href="(?:https?:)?//[^"]+"[^>]*>', doc)
        assert not [e for e in external if 'rel="canonical"' not in e], f"{page}: {external}"


def test_the_readme_is_short_and_opens_with_the_two_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme) < README_LIMIT, f"README.md has {len(readme):,} characters (limit {README_LIMIT:,})"
    before, fence, rest = readme.partition("```")
    assert fence, "README.md has no code block"
    assert before.startswith("# papersim") and "\n## " not in before and len(before) < 800, \
        "the two commands must come right after the title and a short intro"
    first_block = rest.split("```", 1)[0]
    assert "bash scripts/run.sh" in first_block and "bash scripts/test.sh" in first_block


def test_a_benchmark_record_keeps_its_notes_and_a_failed_run_records_nothing(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from record import record

    monkeypatch.setenv("BENCHMARK_RESULTS", str(tmp_path))
    with record("demo"):
        print("| a |\n|---|\n| 1 |")
    path = tmp_path / "demo.md"
    path.write_text(path.read_text(encoding="utf-8") + "How to read it: the notes.\n", encoding="utf-8")
    with record("demo"):
        print("| a |\n|---|\n| 2 |")
    with pytest.raises(RuntimeError):
        with record("demo"):
            print("| a |\n|---|\n| 3 |")
            raise RuntimeError("the benchmark failed")
    text = path.read_text(encoding="utf-8")
    assert "| 2 |" in text and "| 1 |" not in text and "| 3 |" not in text
    assert "How to read it: the notes." in text
    assert re.search(r"Recorded \d{4}-\d{2}-\d{2} by `", text)
