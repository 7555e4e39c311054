"""The registered model's behaviour: a DataFrame of requests in, the top-k similar papers out.

Each request row has either `query` (free text, the served fusion by default) or `paper_id` (papers
similar to an indexed one, as papersim.retrieval.similar answers them), an optional `k` (1-100,
default 10), an optional `mode` for text queries (served: the index's own fusion, the default;
dense, bm25, hybrid) and optional filters: `since` and `until` (YYYY-MM-DD, YYYY-MM or YYYY) and
`group` (one group, or several separated by ";": papers in any of them). The answer has one row
per hit: `request` (the request's row number), `rank`, `paper_id`, `title`, `score`, the paper's
`authors`, `date`, `url`, `venue`, `categories` (empty where it has none) and `why` (the request's words
with the largest part in the hit's BM25 match). A bad request raises PapersimError naming the row and
the rule, which the MLflow wrapper turns into an HTTP 400.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from papersim.errors import PapersimError
from papersim.retrieval.filters import Filter
from papersim.retrieval.search import (
    ANSWER_COLUMNS,
    MAX_K,
    MODES,
    SearchIndex,
    attach_encoder,
    check_request,
    load_search_index,
    search_texts,
    similar_rows,
)

DEFAULT_K = 10
DEFAULT_MODE = "served"
OUTPUT_COLUMNS = ["request", "rank", "paper_id", "title", "score",
                  *[c for c in ANSWER_COLUMNS if c not in ("rank", "score", "paper_id", "title")]]
MAX_REQUESTS = 1000  # rows per call: a batch, not a bulk export


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value) != ""


def _k(value, row: int) -> int:
    if not _present(value):
        return DEFAULT_K
    try:
        k = float(value)
    except (TypeError, ValueError):
        raise PapersimError(f"request row {row}: k must be an integer, got {value!r}") from None
    if not k.is_integer() or not 1 <= k <= MAX_K:
        raise PapersimError(f"request row {row}: k must be an integer between 1 and {MAX_K}, got {value!r}")
    return int(k)


def _filter(record: dict, row: int) -> Filter:
    text = {name: str(record[name]).strip() if _present(record.get(name)) else "" for name in ("since", "until", "group")}
    try:
        return Filter(since=text["since"], until=text["until"], groups=tuple(text["group"].split(";")))
    except PapersimError as exc:
        raise PapersimError(f"request row {row}: {exc}") from None


def parse_requests(requests: pd.DataFrame) -> list[dict]:
    """Validate every row first (a bad row rejects the whole batch) -> [{query|paper_id, k, mode}]."""
    if not isinstance(requests, pd.DataFrame):
        raise PapersimError(f"requests must be a table (DataFrame), got {type(requests).__name__}")
    if "query" not in requests.columns and "paper_id" not in requests.columns:
        raise PapersimError("missing field: each request needs a `query` (text) or a `paper_id` column; "
                            f"got columns {list(map(str, requests.columns)) or 'none'}")
    if requests.empty:
        raise PapersimError("no requests: send at least one row")
    if len(requests) > MAX_REQUESTS:
        raise PapersimError(f"too many requests in one call ({len(requests)}, at most {MAX_REQUESTS})")
    parsed = []
    for row, record in enumerate(requests.to_dict(orient="records")):
        query, paper_id = record.get("query"), record.get("paper_id")
        if _present(query) == _present(paper_id):
            raise PapersimError(f"request row {row}: give exactly one of `query` and `paper_id`")
        mode = record.get("mode") if _present(record.get("mode")) else DEFAULT_MODE
        if mode not in MODES:
            raise PapersimError(f"request row {row}: unknown mode {mode!r}; use one of {', '.join(MODES)}")
        item = {"k": _k(record.get("k"), row), "mode": mode, "filter": _filter(record, row)}
        if _present(query):
            item["query"] = str(query)
        else:
            item["paper_id"] = str(paper_id)
        parsed.append(item)
    return parsed


@dataclass
class SearchService:
    index: SearchIndex

    @classmethod
    def load(cls, encoder_dir: Path, index_dir: Path) -> "SearchService":
        """The index and its encoder (refused if its weights are not the index's), on the backend
        evaluate measured with (`auto`: OpenVINO on CPUs, 4x torch's speed on one query)."""
        si = load_search_index(index_dir)
        attach_encoder(si, encoder_dir, backend="auto")
        return cls(si)

    def predict(self, requests: pd.DataFrame) -> pd.DataFrame:
        """Every text query of the batch is encoded at once and searched together (search_texts)."""
        items = parse_requests(requests)
        texts = [row for row, item in enumerate(items) if "query" in item]
        for row in texts:
            try:
                check_request(items[row]["k"], items[row]["mode"], items[row]["query"])
            except PapersimError as exc:
                raise PapersimError(f"request row {row}: {exc}") from None
        answers = dict(zip(texts, search_texts(self.index, [items[r]["query"] for r in texts],
                                               [items[r]["k"] for r in texts], [items[r]["mode"] for r in texts],
                                               [items[r]["filter"] for r in texts])))
        papers = [row for row, item in enumerate(items) if "paper_id" in item]
        row_of = self.index.row_of
        for row in papers:
            if items[row]["paper_id"] not in row_of:
                raise PapersimError(f"request row {row}: unknown paper id {items[row]['paper_id']!r}: not in the "
                                    f"index ({len(row_of)} papers)")
        answers.update(zip(papers, similar_rows(self.index, [row_of[items[r]["paper_id"]] for r in papers],
                                                [items[r]["k"] for r in papers], [items[r]["filter"] for r in papers])))
        tables = [answers[row].assign(request=row) for row in range(len(items))]
        found = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=OUTPUT_COLUMNS)
        return found[OUTPUT_COLUMNS].astype({"request": "int64", "rank": "int64", "score": "float64"})
