"""Row rules of the corpus, checked by Great Expectations; results mapped back to row positions.

Each expectation carries the papersim rule id in its `meta`, so a failed expectation becomes
"which rule, which rows" without parsing Great Expectations' messages. The metadata rules (date_valid,
url_valid) are judged where the values are parsed (papersim.data.normalise): a value that does not
parse has no normalised form for an expectation to check.
"""

import functools
import os
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

# Human-readable rule names, used in error reports, rejected.parquet and reports/ingest.json.
RULES: dict[str, str] = {
    "parse_error": "record is readable (valid JSON object / CSV record)",
    "id_not_null": "paper_id is present (an id, a title or an abstract to hash)",
    "title_not_empty": "title is not empty",
    "abstract_not_empty": "abstract is not empty",
    "abstract_length": "abstract length within [{min}, {max}] characters",
    "utf8_valid": "text is valid UTF-8 (invalid bytes show as U+FFFD)",
    "date_valid": "date and updated are dates (YYYY-MM-DD, YYYY-MM or YYYY)",
    "url_valid": "url is an http(s) URL (or made from a well-formed arxiv_id or doi)",
    "id_unique": "paper_id is unique (same id with a different title/abstract)",
}


@dataclass(frozen=True)
class RowRules:
    """The rule settings of params.yaml `ingest` that validation needs."""

    min_abstract_chars: int
    max_abstract_chars: int
    require_title: bool


def describe(rule: str, rules: RowRules | None = None) -> str:
    text = RULES[rule]
    if rules is not None:
        text = text.format(min=rules.min_abstract_chars, max=rules.max_abstract_chars)
    return text


@functools.cache
def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # slow import (~4 s): only when validation runs
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("papersim")
        .add_dataframe_asset("papers")
        .add_batch_definition_whole_dataframe("batch")
    )
    return gx, batch_definition


@functools.cache
def _row_suite(rules: RowRules):
    gx, _ = _gx()
    e = gx.expectations
    suite = gx.ExpectationSuite(name=f"papersim-rows-{hash(rules)}")
    checks = [
        e.ExpectColumnValuesToNotBeNull(column="paper_id", meta={"rule": "id_not_null"}),
        e.ExpectColumnValuesToNotBeNull(column="abstract", meta={"rule": "abstract_not_empty"}),
        e.ExpectColumnValueLengthsToBeBetween(column="abstract", min_value=1, meta={"rule": "abstract_not_empty"}),
        e.ExpectColumnValueLengthsToBeBetween(
            column="abstract", min_value=max(rules.min_abstract_chars, 1), max_value=rules.max_abstract_chars,
            meta={"rule": "abstract_length"},
        ),
        e.ExpectColumnValuesToNotMatchRegex(column="title", regex="\ufffd", meta={"rule": "utf8_valid"}),
        e.ExpectColumnValuesToNotMatchRegex(column="abstract", regex="\ufffd", meta={"rule": "utf8_valid"}),
        e.ExpectColumnValuesToNotMatchRegex(column="paper_id", regex="\ufffd", meta={"rule": "utf8_valid"}),
    ]
    if rules.require_title:
        checks += [
            e.ExpectColumnValuesToNotBeNull(column="title", meta={"rule": "title_not_empty"}),
            e.ExpectColumnValueLengthsToBeBetween(column="title", min_value=1, meta={"rule": "title_not_empty"}),
        ]
    for check in checks:
        suite.add_expectation(check)
    return suite


@functools.cache
def _unique_suite():
    gx, _ = _gx()
    suite = gx.ExpectationSuite(name="papersim-unique")
    suite.add_expectation(gx.expectations.ExpectColumnValuesToBeUnique(column="paper_id", meta={"rule": "id_unique"}))
    return suite


def _failures(frame: pd.DataFrame, suite) -> dict[int, list[str]]:
    _, batch_definition = _gx()
    # The validator loads the batch itself; going through batch_definition.get_batch() first
    # would load (and fingerprint, i.e. hash every value of) the same frame twice.
    from great_expectations.validator.v1_validator import Validator

    result = Validator(
        batch_definition=batch_definition,
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False},
    ).validate_expectation_suite(suite)
    failed: dict[int, list[str]] = {}
    for r in result.results:
        if r.success:
            continue
        if r.exception_info and r.exception_info.get("raised_exception"):
            raise RuntimeError(f"Great Expectations could not evaluate {r.expectation_config.type}: {r.exception_info}")
        rule = r.expectation_config.meta["rule"]
        for position in r.result.get("unexpected_index_list") or []:
            rules = failed.setdefault(int(position), [])
            if rule not in rules:
                rules.append(rule)
    return failed


def _frame(**columns: pa.Array | list) -> pd.DataFrame:
    # Arrow-backed columns: Great Expectations fingerprints each batch by hashing it, ~4x faster
    # than on Python objects.
    table = pa.table({k: v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v, pa.large_string())
                      for k, v in columns.items()})
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def row_failures(paper_id, title, abstract, rules: RowRules) -> dict[int, list[str]]:
    """Row position -> ids of the rules it breaks; rows breaking none are absent.

    Columns are Arrow arrays or lists of strings, all of the same length.
    """
    frame = _frame(paper_id=paper_id, title=title, abstract=abstract)
    failed = _failures(frame, _row_suite(rules))
    for found in failed.values():  # an empty abstract is reported once, as empty, not also as too short
        if "abstract_not_empty" in found and "abstract_length" in found:
            found.remove("abstract_length")
    return failed


def merge_failures(failures: dict[int, list[str]], invalid: dict[int, dict[str, str]]) -> dict[int, list[str]]:
    """`failures` (row -> rules) with the rules of `invalid` (row -> {rule: detail}) added."""
    merged = {row: list(rules) for row, rules in failures.items()}
    for row, found in invalid.items():
        rules = merged.setdefault(row, [])
        rules += [rule for rule in found if rule not in rules]
    return merged


def duplicate_id_rows(paper_ids) -> list[int]:
    """Positions of every row whose paper_id occurs more than once (an Arrow array or a list)."""
    frame = _frame(paper_id=paper_ids)
    return sorted(_failures(frame, _unique_suite()))
