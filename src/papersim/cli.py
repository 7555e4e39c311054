"""The `papersim` command: run the pipeline, check params.yaml, summarise, search, manage the registry."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from papersim.config import check_params
from papersim.env import apply_offline_defaults, dvc_executable
from papersim.errors import PapersimError

STAGE_REPORTS = {"ingest": "reports/ingest.json", "mine_pairs": "reports/mine_pairs.json",
                 "train": "reports/train.json", "evaluate": "reports/evaluate.json",
                 "build_index": "reports/build_index.json"}


def summary(root: Path) -> str:
    """A few lines per stage from its report, for the end of the main command."""
    lines = []
    ingest = root / STAGE_REPORTS["ingest"]
    if ingest.is_file():
        r = json.loads(ingest.read_text(encoding="utf-8"))
        per_source = ", ".join(f"{k} {v}" for k, v in sorted(r["rows_read"].items()))
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(r["rejected"].items()) if v) or "none"
        lines += [
            "ingest",
            f"  rows read          {r['rows_read_total']} ({per_source})",
            f"  duplicates merged  {r['duplicates_merged']}",
            f"  rejected           {r['rejected_total']} (by rule: {rejected})",
            f"  papers written     {r['rows_written']} -> data/processed/papers.parquet",
        ]
    pairs = root / STAGE_REPORTS["mine_pairs"]
    if pairs.is_file():
        r = json.loads(pairs.read_text(encoding="utf-8"))
        lines.append("mine_pairs")
        lines.append(f"  papers by split    {', '.join(f'{k} {v}' for k, v in sorted(r['papers'].items()))}")
        for split in ("train", "val"):
            by_source = ", ".join(f"{k} {v}" for k, v in sorted(r["pairs"][split].items()) if k != "total")
            removed = ", ".join(f"{k} {v}" for k, v in sorted(r["negatives_removed"][split].items()))
            lines.append(f"  {split} pairs {r['pairs'][split]['total']:>7}  ({by_source})")
            fills = r["negatives"][split]["random_fill"]
            lines.append(f"    negatives removed by filter: {removed}; random fills {fills}")
    train = root / STAGE_REPORTS["train"]
    if train.is_file():
        r = json.loads(train.read_text(encoding="utf-8"))
        lines += [
            "train",
            f"  steps              {r['steps']} on {r['device']} x{r['world_size']} "
            f"(resumed from step {r['resumed_from_step']})",
            f"  best {r['best_metric']:<13} {r['best_metric_value'] or float('nan'):.4f} "
            f"at step {r['best_checkpoint_step']} -> models/encoder",
        ]
        if "serving" in r:
            lines.append(f"  serves             {r['serving']['reason']}")
    table = root / "reports/evaluate.md"
    if table.is_file():
        lines += ["evaluate (reports/evaluate.md)", table.read_text(encoding="utf-8").rstrip()]
    index = root / STAGE_REPORTS["build_index"]
    if index.is_file():
        r = json.loads(index.read_text(encoding="utf-8"))
        from papersim.stage import timings_path

        timings = timings_path(index)
        speed = json.loads(timings.read_text(encoding="utf-8")) if timings.is_file() else {}
        qps = f"{speed['queries_per_second']:.0f} queries/s, " if "queries_per_second" in speed else ""
        lines += [
            "build_index",
            f"  papers indexed     {r['papers']} ({r['factory']}, {r['mode']}: {r['mode_reason']}; "
            f"encoded {speed.get('papers_encoded', '?')}) -> artifacts/index",
            f"  recall@10 {r.get('recall@10', 1.0):.3f} vs exact, {qps}{r['memory_bytes'] / 2**20:.1f} MiB",
        ]
    if not lines:
        raise PapersimError(f"no reports under {root / 'reports'}: run the pipeline first (`dvc repro`)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="papersim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    repro = sub.add_parser("repro", help="run the pipeline (or some stages) with `dvc repro`",
                           description="Run `dvc repro [STAGE...]` offline, from the repository root.")
    repro.add_argument("stages", nargs="*", help="stages to reproduce (default: all)")

    check = sub.add_parser("check-params", help="validate params.yaml against every stage's config",
                           description="Fail on unknown sections or keys, missing keys and bad values.")
    check.add_argument("--params", type=Path, default=Path("params.yaml"))

    summ = sub.add_parser("summary", help="print what the last pipeline run produced",
                          description="Summarise the stage reports under reports/.")
    summ.add_argument("--root", type=Path, default=Path("."), help="repository root")

    for name, what, helptext in (("search", "query", "papers similar to a text"),
                                 ("similar", "paper_id", "papers similar to an indexed paper")):
        cmd = sub.add_parser(name, help=helptext, description=f"Print the {helptext}, best first.")
        cmd.add_argument(what, help="the text to search for" if what == "query" else "an id from the corpus")
        cmd.add_argument("-k", type=int, default=10, help="how many papers (1-100)")
        if name == "search":
            cmd.add_argument("--mode", default="served", choices=("served", "dense", "bm25", "hybrid"),
                             help="served (the fusion chosen for this corpus and stored with the index: what "
                                  "evaluate reports as `served`), dense (the served encoder), bm25, or hybrid "
                                  "(reciprocal-rank fusion of both)")
        cmd.add_argument("--since", default="", metavar="DATE",
                         help="only papers dated on or after DATE (YYYY-MM-DD, YYYY-MM or YYYY)")
        cmd.add_argument("--until", default="", metavar="DATE", help="only papers dated on or before DATE")
        cmd.add_argument("--group", action="append", default=[], metavar="GROUP",
                         help="only papers in GROUP (a listing page, a category); repeat for any of several")
        cmd.add_argument("--json", action="store_true",
                         help="JSON lines (every field: metadata, why) instead of the listing")
        cmd.add_argument("--index", type=Path, default=Path("artifacts/index"), help="index folder (build_index)")
        cmd.add_argument("--model", default=None,
                         help="the encoder folder the index was built with (default: the one its index.json "
                              "names), or a registry version: `champion`, `challenger` or a version number "
                              "(its own encoder and index; --index is ignored)")

    web = sub.add_parser("web", help="serve pages: search, a paper and its similar papers, compare, registry",
                         description="One resident process serving the pages on http://HOST:PORT/ (the model and "
                                     "the index loaded once). Every page also answers JSON (?format=json).")
    web.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: this machine only; 0.0.0.0 serves every paper, the "
                          "registry's versions and gate reasons to anyone who can reach this machine)")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--index", type=Path, default=Path("artifacts/index"), help="index folder (build_index)")
    web.add_argument("--model", default=None,
                     help="as `papersim search`: an encoder folder, or a registry version (`champion`, "
                          "`challenger` or a version number: its own encoder and index; --index is ignored)")

    reg = sub.add_parser("registry", help="list, promote or roll back registered model versions",
                         description="The MLflow model registry's versions of the search model and their aliases.")
    reg.add_argument("action", choices=("list", "promote", "rollback"))
    reg.add_argument("version", nargs="?", help="the version to promote (promote only)")
    reg.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (retrain.model_name)")
    return parser


REGISTRY_REFS = ("champion", "challenger")


def _model_name(params: Path) -> str:
    from papersim.lifecycle.retrain import retrain_config

    return retrain_config(params).model_name


def resolve_model(args: argparse.Namespace) -> tuple[Path | None, Path]:
    """(encoder folder, index folder) from --model / --index: a folder, or a registry version.

    Without --model the encoder is the one the index serves (None: read it from index.json)."""
    if args.model in REGISTRY_REFS or (args.model or "").isdigit():
        from papersim.lifecycle.registry import resolve
        from papersim.lifecycle.versions import REGISTRY_CACHE, Version

        version = Version(resolve(_model_name(Path("params.yaml")), args.model, Path(REGISTRY_CACHE)))
        return version.encoder, version.index
    return (Path(args.model) if args.model else None), args.index


def run_registry(args: argparse.Namespace) -> str:
    from papersim.lifecycle import registry

    name = _model_name(args.params)
    if args.action == "list":
        return registry.table(name)
    if args.action == "promote":
        if not args.version:
            raise PapersimError("promote needs a version: `papersim registry promote 3`")
        return registry.promote(name, args.version)
    if args.version:
        raise PapersimError("rollback takes no version: it returns to the previous champion")
    return registry.rollback(name)


def run_search(args: argparse.Namespace) -> str:
    """The answer to `papersim search` / `papersim similar` as printable text."""
    from papersim.retrieval.filters import Filter
    from papersim.retrieval.search import attach_encoder, check_request, load_search_index, search_text, similar_papers

    check_request(args.k, getattr(args, "mode", "dense"), getattr(args, "query", None))
    flt = Filter(since=args.since, until=args.until, groups=tuple(args.group))
    model, index = resolve_model(args)
    si = load_search_index(index)
    if args.command == "search" and args.mode != "bm25":
        attach_encoder(si, model)
    table = search_text(si, args.query, args.k, args.mode, flt) if args.command == "search" else \
        similar_papers(si, args.paper_id, args.k, flt)
    if args.json:
        return "\n".join(json.dumps(row, ensure_ascii=False) for row in table.to_dict(orient="records"))
    if table.empty:
        return f"no matching papers{f' ({flt.describe()})' if flt.active else ''}"
    return listing(table.to_dict(orient="records"), matched="matches" if args.command == "search" else "why")


def listing(hits: list[dict], matched: str = "why") -> str:
    """An answer as a person reads it: rank, score and title (LaTeX as Unicode), then authors, date,
    categories, link, the words behind the match and the id, one line each where the paper has them."""
    from papersim.markup import to_text
    from papersim.retrieval.filters import show_date

    lines = []
    for hit in hits:
        lines.append(f"{hit['rank']:>3}. {hit['score']:.4f}  {to_text(hit['title'])}")
        about = [", ".join(hit.get("authors") or []), show_date(hit.get("date")), hit.get("venue") or "",
                 ", ".join(hit.get("categories") or [])]
        for line in (" | ".join(a for a in about if a), hit.get("url") or "",
                     f"{matched}: {', '.join(hit['why'])}" if hit.get("why") else "", f"id: {hit['paper_id']}"):
            if line:
                lines.append(f"{'':13}{line}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_offline_defaults()
    try:
        if args.command == "repro":
            if not Path("dvc.yaml").is_file():
                raise PapersimError("no dvc.yaml here: run `papersim repro` from the repository root")
            return subprocess.call([dvc_executable(), "repro", *args.stages], env=os.environ)
        if args.command == "check-params":
            checked = check_params(args.params)
            print(f"{args.params}: ok ({', '.join(checked)})")
        elif args.command == "summary":
            print(summary(args.root))
        elif args.command in ("search", "similar"):
            print(run_search(args))
        elif args.command == "registry":
            print(run_registry(args))
        elif args.command == "web":
            from papersim.web.app import serve

            serve(args.model, args.index, args.host, args.port)
    except PapersimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
