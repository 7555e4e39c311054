"""Each page's contents as a plain dict: the same fields feed the HTML template and the JSON answer.

The answers come from papersim.retrieval.search (search_text, similar_papers), exactly what the
`papersim` command and the registered model call; this module only lays them out.
"""

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import quote, urlencode, urlsplit

import pandas as pd

from papersim.errors import PapersimError
from papersim.lifecycle.retrain import RetrainConfig
from papersim.retrieval.filters import NO_FILTER, Filter
from papersim.retrieval.search import MAX_K, MAX_QUERY_CHARS, MODES, check_request, search_text, similar_papers
from papersim.web.models import WORKSPACE, Model, ModelStore, Registry, _without_password

ABSTRACT_START = 300  # characters of an abstract under a listed title: about three lines, as the saved pages show
DEFAULT_K = 10
DEFAULT_MODE = "served"
OVERLAP_AT = 10  # compare's agreement measure: the share of the top 10 both versions list


class NotFound(PapersimError):
    """An unknown paper id: the pages answer 404."""


def paper_url(paper_id: str) -> str:
    return "/paper/" + quote(paper_id, safe=":@")


def abstract_start(text: str | None, limit: int = ABSTRACT_START) -> str | None:
    """The first `limit` characters, cut at a word when one ends in the second half, with an ellipsis;
    never inside a `$...$` formula (it would show as markup), which is kept whole or left out."""
    if text is None or len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    cut = cut[:space] if space > limit // 2 else cut
    if cut.count("$") % 2:  # cut inside a formula: end before it
        cut = cut[:cut.rfind("$")]
    return cut.rstrip(" ,;:") + " …"


def link_label(url: str) -> str:
    """An address as a link's text: host and path, without the scheme."""
    parts = urlsplit(url)
    return (parts.netloc + parts.path).rstrip("/") or url


def parse_filter(values) -> Filter:
    """since, until and group (repeated, or several in one field separated by ";") of a page's query string."""
    groups = [g for value in values.getlist("group") for g in value.split(";")]
    return Filter(since=values.get("since") or "", until=values.get("until") or "", groups=tuple(groups))


def filter_fields(flt: Filter) -> dict:
    """What the filter form shows (and a shareable URL carries)."""
    return {"since": flt.since, "until": flt.until, "group": "; ".join(flt.groups), "active": flt.active,
            "describe": flt.describe()}


def parse_k(value: str | None) -> int:
    if value is None or value.strip() == "":
        return DEFAULT_K
    try:
        k = int(value)
    except ValueError:
        raise PapersimError(f"k must be an integer between 1 and {MAX_K}, got {value[:20]!r}") from None
    check_request(k)
    return k


def _number(value) -> float | None:
    """A score or metric for display and JSON (which has no NaN): 4 decimals, None when missing."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else round(value, 4)


def hits(model: Model, table: pd.DataFrame) -> list[dict]:
    """One row per answer: rank, title, its page, abstract start, source, groups, score, the paper's
    metadata (authors, date, link: its own address, venue, categories) and why (the words behind its
    BM25 match)."""
    rows = []
    for record in table.to_dict(orient="records"):
        paper = model.paper(record["paper_id"])
        rows.append({"rank": int(record["rank"]), "paper_id": record["paper_id"], "title": record["title"],
                     "url": paper_url(record["paper_id"]), "abstract_start": abstract_start(paper["abstract"]),
                     "source": paper["source"], "groups": paper["groups"], "score": _number(record["score"]),
                     "authors": paper["authors"], "date": paper["date"], "link": paper["link"],
                     "venue": paper["venue"], "categories": paper["categories"], "why": list(record.get("why") or [])})
    return rows


def empty_reason(mode: str, papers: int, flt: Filter = NO_FILTER) -> str:
    if papers == 0:
        return "the index holds no papers"
    if flt.active:
        return f"no paper matches both the request and the filter ({flt.describe()}); papers without a date " \
               "match no date filter"
    if mode == "similar":
        return "the index holds no other paper"
    if mode == "bm25":
        return ("no paper shares a word with the query: BM25 matches words (after stop words and stemming); "
                "mode served or dense also finds papers that say it in other words")
    return "the index answered nothing for this query"


def search_page(model: Model, query: str | None, k: int, mode: str, flt: Filter = NO_FILTER) -> dict:
    """The search box and, for a query, its hits (of the papers `flt` keeps); an empty answer says why."""
    check_request(k, mode)
    page = {"query": query or "", "mode": mode, "k": k, "modes": list(MODES), "max_k": MAX_K,
            "max_query_chars": MAX_QUERY_CHARS, "model": model.label, "details_note": model.details_note,
            "filter": filter_fields(flt), "searched": False, "hits": [], "empty_reason": None}
    if query is None or not query.strip():
        return page
    check_request(k, mode, query)
    table = search_text(model.index, query, k, mode, flt)
    page.update(searched=True, hits=hits(model, table),
                empty_reason=None if len(table) else empty_reason(mode, len(model.titles), flt))
    return page


def paper_page(model: Model, paper_id: str, k: int, flt: Filter = NO_FILTER) -> dict:
    """A paper, whole, and the papers most like it (similar_papers, of those `flt` keeps), each linking
    to its own page."""
    check_request(k)
    if paper_id not in model.row_of:
        raise NotFound(f"unknown paper id {paper_id!r}: not in the index ({len(model.titles)} papers)")
    similar = hits(model, similar_papers(model.index, paper_id, k, flt))
    return {"paper": {**model.paper(paper_id), "url": paper_url(paper_id)}, "k": k, "model": model.label,
            "details_note": model.details_note, "similar": similar, "filter": filter_fields(flt),
            "empty_reason": None if similar else empty_reason("similar", len(model.titles), flt),
            "compare_url": "/compare?" + urlencode({"paper": paper_id})}


def rank_moves(a_ids: list[str], b_ids: list[str]) -> tuple[list[dict], list[dict], float | None]:
    """How list B differs from list A: per row of A, whether B lists the paper too (and where); per row of
    B, its move against A (`up`/`down` by so many places, `same`, or `new`: not in A's list); and
    overlap@10, the share of the top 10 that both list (of the longer list's top 10, None for two empty)."""
    a_rank = {pid: r for r, pid in enumerate(a_ids, 1)}
    b_rank = {pid: r for r, pid in enumerate(b_ids, 1)}
    a_marks = [{"in_both": pid in b_rank, "other_rank": b_rank.get(pid)} for pid in a_ids]
    b_marks = []
    for r, pid in enumerate(b_ids, 1):
        was = a_rank.get(pid)
        move = "new" if was is None else "up" if was > r else "down" if was < r else "same"
        b_marks.append({"in_both": was is not None, "other_rank": was, "move": move,
                        "by": abs(was - r) if was is not None else None})
    top = min(OVERLAP_AT, max(len(a_ids), len(b_ids)))
    overlap = len(set(a_ids[:OVERLAP_AT]) & set(b_ids[:OVERLAP_AT])) / top if top else None
    return a_marks, b_marks, overlap


def default_refs(registry: Registry) -> tuple[str, str]:
    """champion and challenger; without a challenger the newest other version; with one version, it
    against the workspace index."""
    versions = registry.versions()
    if not versions:
        raise PapersimError(f"model {registry.model_name!r} has no registered versions yet: compare needs the "
                            "registry the main command fills (`bash scripts/run.sh`)")
    aliases = {alias for v in versions for alias in v["aliases"]}
    if {"champion", "challenger"} <= aliases:
        return "champion", "challenger"
    first = "champion" if "champion" in aliases else versions[0]["version"]
    first_version = registry.find(first)["version"]
    others = [v["version"] for v in versions if v["version"] != first_version]
    return first, others[0] if others else WORKSPACE


def report_metrics(report: dict | None, cfg: RetrainConfig) -> list[dict]:
    """The gate's metrics (primary, then guards) on each gate set of an evaluate report, then the
    similar task's metric when the report scored it."""
    if not report:
        return []
    sets = cfg.gate_sets or [name for name, value in report.items()
                             if isinstance(value, dict) and name != cfg.similar_set]
    checks = [(name, metric) for name in sets for metric in dict.fromkeys([cfg.primary_metric, *cfg.guard_metrics])]
    if cfg.similar_set and isinstance(report.get(cfg.similar_set), dict):
        checks.append((cfg.similar_set, cfg.similar_metric))
    out = []
    for name, metric in checks:
        system, measure = metric.split("/")
        value = report.get(name, {}).get(system, {}).get(measure) if isinstance(report.get(name), dict) else None
        out.append({"set": name, "metric": metric, "value": _number(value)})
    return out


def version_summary(ref: str, model: Model, registry: Registry, cfg: RetrainConfig) -> dict:
    """What compare shows above a version's answers: which version, its gate outcome, reason and metrics."""
    found = registry.find(model.version) if model.version else None
    tags = found["tags"] if found else {}
    return {"ref": ref, "label": model.label, "version": found["version"] if found else None,
            "aliases": sorted(found["aliases"]) if found else [],
            "gate": tags.get("papersim.gate") if found else "not registered",
            "gate_reason": tags.get("papersim.gate_reason") or (found or {}).get("description") or None,
            "primary_metric": tags.get("papersim.primary_metric", cfg.primary_metric),
            "primary": _number(tags.get("papersim.primary")), "metrics": report_metrics(model.report, cfg)}


def compare_page(store: ModelStore, cfg: RetrainConfig, a_ref: str | None, b_ref: str | None, query: str | None,
                 paper_id: str | None, k: int, mode: str) -> dict:
    """One query (or one paper) answered by two versions side by side, papers in both marked."""
    check_request(k, mode)
    query, paper_id = (query or "").strip() or None, (paper_id or "").strip() or None
    if query and paper_id:
        raise PapersimError("give either a query (q) or a paper (paper), not both")
    if not a_ref or not b_ref:
        a_default, b_default = default_refs(store.registry)
        a_ref, b_ref = a_ref or a_default, b_ref or b_default
    a, b = store.get(a_ref), store.get(b_ref)
    page = {"a": a_ref, "b": b_ref, "query": query or "", "paper_id": paper_id or "", "k": k, "mode": mode,
            "modes": list(MODES), "max_k": MAX_K, "choices": _choices(store.registry),
            "versions": [version_summary(ref, m, store.registry, cfg) for ref, m in ((a_ref, a), (b_ref, b))],
            "columns": [], "overlap@10": None, "paper": None}
    depth = max(k, OVERLAP_AT)
    if query:
        check_request(k, mode, query)
        tables = _both(lambda m: search_text(m.index, query, depth, mode), a, b)
    elif paper_id:
        for m in (a, b):
            if paper_id not in m.row_of:
                raise NotFound(f"unknown paper id {paper_id!r}: not in the index of {m.label}")
        page["paper"] = {**a.paper(paper_id), "url": paper_url(paper_id)}
        tables = _both(lambda m: similar_papers(m.index, paper_id, depth), a, b)
    else:
        return page
    a_marks, b_marks, overlap = rank_moves(tables[0]["paper_id"].tolist(), tables[1]["paper_id"].tolist())
    for model, table, marks, summary in zip((a, b), tables, (a_marks, b_marks), page["versions"]):
        rows = [{**hit, **mark} for hit, mark in zip(hits(model, table.head(k)), marks)]
        page["columns"].append({"label": summary["label"], "ref": summary["ref"], "hits": rows,
                                "empty_reason": None if rows else empty_reason(mode, len(model.titles))})
    page["overlap@10"] = _number(overlap)
    return page


def _both(answer, a: Model, b: Model) -> list[pd.DataFrame]:
    """Both versions' answers at once (faiss, BM25's scoring and OpenVINO release the GIL): compare then
    takes about one search's time on an idle core, not two."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(answer, (a, b)))


def _choices(registry: Registry) -> list[dict]:
    """What the compare form offers: the aliases, every version, the workspace index."""
    versions = registry.versions()
    aliases = [{"ref": alias, "label": f"{alias} (v{v['version']})"}
               for v in versions for alias in sorted(v["aliases"])]
    return aliases + [{"ref": v["version"], "label": f"v{v['version']}"} for v in versions] + \
        [{"ref": WORKSPACE, "label": "workspace index"}]


def tracking_ui(uri: str) -> str | None:
    """The MLflow UI's address when the tracking store is a server (http/https), without a password."""
    return _without_password(uri).rstrip("/") if urlsplit(uri).scheme in ("http", "https") else None


def registry_page(registry: Registry, cfg: RetrainConfig, ui: str | None) -> dict:
    """Versions, aliases, gate outcomes and reasons, primary metrics, the drift history, MLflow links."""
    rows = []
    for v in registry.versions():
        tags = v["tags"]
        rows.append({
            "version": v["version"], "aliases": sorted(v["aliases"]), "gate": tags.get("papersim.gate"),
            "gate_reason": tags.get("papersim.gate_reason") or v.get("description") or None,
            "primary_metric": tags.get("papersim.primary_metric", cfg.primary_metric),
            "primary": _number(tags.get("papersim.primary")), "papers": tags.get("papersim.papers"),
            "served_encoder": tags.get("papersim.served_encoder"),
            "created": datetime.fromtimestamp(v["created"] / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "run_id": v["run_id"], "run_url": f"{ui}/#/runs/{v['run_id']}" if ui and v["run_id"] else None,
            "version_url": f"{ui}/#/models/{quote(registry.model_name)}/versions/{v['version']}" if ui else None})
    drift = registry.drift_history()
    drift_rows = [{"run": r["run"], "changed_share": _number(r["changed_share"]), "mmd2": _number(r["mmd2"]),
                   "p_value": _number(r["p_value"])} for r in drift.to_dict(orient="records")]
    measured = any(r["mmd2"] is not None or r["changed_share"] is not None for r in drift_rows)
    return {"model_name": registry.model_name, "versions": rows, "champion_history": registry.champion_history(),
            "tracking_ui": ui, "drift_history": drift_rows, "drift_p_value": cfg.drift_p_value,
            "drift_plot": "/registry/drift.png" if measured else None}
