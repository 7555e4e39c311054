"""Pages generated at every build (mkdocs-gen-files), never committed:

- reference/config.md: one table per params.yaml section, from the stage's frozen config dataclass
  (papersim.config.STAGE_CONFIGS): each key's type, default and why (the field's comment in the source,
  read with tokenize), and the value params.yaml sets where it differs, with params.yaml's own comment;
- results/reports.md: what the last run of each stage reported (reports/<stage>.json, evaluate.md);
- results/benchmarks/*.md: benchmarks/results/*.md as the benchmarks recorded them, and their index.
"""

import ast
import dataclasses
import importlib
import inspect
import io
import json
import re
import tokenize
import typing
from pathlib import Path

import mkdocs_gen_files
import yaml

from papersim.config import STAGE_CONFIGS

ROOT = Path(__file__).resolve().parents[1]


# --- configuration reference -------------------------------------------------------------------------------

@dataclasses.dataclass
class Comments:
    why: str = ""  # the field's own comment: on its line, continued on the comment lines right after it
    lead: str = ""  # comment lines above the field: its only why, or a note on the fields that follow


def _comment_lines(source: str) -> tuple[dict[int, str], set[int]]:
    """(line -> comment text, the lines holding nothing but a comment)."""
    comments, code_lines = {}, set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    alone = {line for line in comments if line not in code_lines}
    return comments, alone


def class_comments(cls: type) -> dict[str, Comments]:
    """Each field of dataclass `cls` (its own body, not its bases') with its comments."""
    source = Path(inspect.getsourcefile(cls)).read_text(encoding="utf-8")
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    comments, alone = _comment_lines(source)
    out: dict[str, Comments] = {}
    previous, previous_end = None, node.lineno  # a docstring is a statement too: its lines are skipped
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            previous_end = stmt.end_lineno
            continue
        name = stmt.target.id
        block = " ".join(comments[n] for n in range(previous_end + 1, stmt.lineno) if n in alone)
        own = " ".join(comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments and n not in alone)
        # Comment lines between two commented fields that start in lower case continue the first one's
        # sentence ("# (mnrl that never ...", "# evaluate's sets): ..."); otherwise they introduce the next.
        if block and previous and out[previous].why and own and not block[0].isupper():
            out[previous].why += " " + block
            block = ""
        out[name] = Comments(why=own, lead=block)
        previous, previous_end = name, stmt.end_lineno
    return out


def field_comments(cls: type) -> dict[str, Comments]:
    """Every field's comments, inherited fields from the class that declares them."""
    out: dict[str, Comments] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and "__dataclass_fields__" in vars(klass):
            out.update(class_comments(klass))
    return out


def params_comments(path: Path) -> dict[tuple[str, str], str]:
    """(section, key) -> the comment after the key's value in params.yaml."""
    out, section = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        top = re.match(r"^(\w+):", line)
        if top:
            section = top.group(1)
            continue
        key = re.match(r"^  (\w+):(.*)$", line)
        if key and section:
            quote, rest = None, key.group(2)
            for i, ch in enumerate(rest):
                if ch in "\"'" and quote in (None, ch):
                    quote = None if quote else ch
                elif ch == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
                    out[(section, key.group(1))] = rest[i + 1:].strip()
                    break
    return out


def yaml_value(value) -> str:
    if value is dataclasses.MISSING:
        return "required"
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()
    return "`" + text.removesuffix("...").strip() + "`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def default_of(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def nested_dataclass(cls: type, field: dataclasses.Field) -> type | None:
    """X for a field typed list[X] with X a dataclass (ingest.sources: list[SourceSpec])."""
    hint = typing.get_type_hints(cls).get(field.name)
    args = typing.get_args(hint)
    return args[0] if typing.get_origin(hint) is list and args and dataclasses.is_dataclass(args[0]) else None


def table(cls: type, section: str, values: dict, notes: dict[tuple[str, str], str]) -> list[str]:
    comments, hints = field_comments(cls), typing.get_type_hints(cls)
    head = ["| key | type | default | params.yaml sets | why |", "|---|---|---|---|---|"]
    lines, nested = list(head), []
    for field in dataclasses.fields(cls):
        c = comments.get(field.name, Comments())
        why = c.why or c.lead
        if c.lead and c.why:  # a note on the fields from here on: a paragraph between two tables
            lines += ["", cell(c.lead), ""] + head
        default = default_of(field)
        sets = ""
        if field.name in values and values[field.name] != default:
            inner = nested_dataclass(cls, field)
            if inner is not None:
                sets = f"{len(values[field.name])} entries (below)"
                nested.append((field.name, inner))
            else:
                sets = yaml_value(values[field.name])
            if notes.get((section, field.name)):
                sets += f": {cell(notes[(section, field.name)])}"
        hint = hints.get(field.name)
        type_text = hint.__name__ if isinstance(hint, type) and not typing.get_args(hint) else str(hint)
        type_text = re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", type_text)  # papersim.data.sources.SourceSpec -> SourceSpec
        lines.append(f"| `{field.name}` | `{type_text}` | {yaml_value(default)} | {sets} | {cell(why)} |")
    for name, inner in nested:
        lines += ["", f"### `{section}.{name}`: each entry", "", *table(inner, f"{section}.{name}", {}, {})]
        shipped = yaml.safe_dump({name: values[name]}, sort_keys=False, default_flow_style=None, width=100)
        lines += ["", "As params.yaml ships it:", "", "```yaml", *shipped.strip().splitlines(), "```"]
    return lines


def config_reference() -> str:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    notes = params_comments(ROOT / "params.yaml")
    out = ["# Configuration reference", "",
           "Generated from the code at every build of this site: each `params.yaml` section is the frozen",
           "config dataclass of its stage, so these tables list every key that section accepts (an unknown key",
           "is an error; `papersim check-params` checks the whole file). **default** is the dataclass's,",
           "**why** the comment beside it in the source; **params.yaml sets** shows where the shipped file",
           "differs, with its own comment. Change a value for one run with `--set SECTION.KEY=VALUE` or a",
           "profile file (see [Retraining](../lifecycle/retrain.md)); `params.yaml` is never edited by a run.", ""]
    for section, ref in STAGE_CONFIGS.items():
        module, name = ref.split(":")
        cls = getattr(importlib.import_module(module), name)
        what = "the retraining flow's section, not a DVC stage" if section == "retrain" else "the DVC stage's section"
        out += [f"## `{section}`", "", f"`{module}.{name}`: {what}.", "",
                *table(cls, section, params.get(section, {}), notes), ""]
    return "\n".join(out)


# --- what the last run reported ------------------------------------------------------------------------------

def _report(name: str) -> dict:
    return json.loads((ROOT / "reports" / f"{name}.json").read_text(encoding="utf-8"))


def _rows(pairs) -> list[str]:
    return ["| | last run |", "|---|---|", *(f"| {k} | {v} |" for k, v in pairs)]


def reports_page() -> str:
    ingest, mine, train, index = (_report(n) for n in ("ingest", "mine_pairs", "train", "build_index"))
    out = ["# What the last run reported", "",
           "The stages' own reports as committed (`reports/<stage>.json`, DVC metrics), read when this site was",
           "built. [Quality](quality.md) says what the numbers mean.", "", "## ingest", ""]
    out += ["| source | rows read |", "|---|---:|", *(f"| {s} | {n:,} |" for s, n in ingest["rows_read"].items())]
    out += ["", *_rows([("rows read", f"{ingest['rows_read_total']:,}"),
                        ("duplicates merged", f"{ingest['duplicates_merged']:,}"),
                        ("rejected (quarantined)", f"{ingest['rejected_total']:,} ({ingest['rejected_fraction']:.2%})"),
                        ("papers written", f"{ingest['rows_written']:,}")])]
    out += ["", "Rejected rows by rule (a row may break several):", "",
            "| rule | rows |", "|---|---:|", *(f"| `{r}` | {n} |" for r, n in ingest["rejected"].items())]
    out += ["", "## mine_pairs", "", "| split | papers | pairs | title -> abstract | co-listed | self-supervised |",
            "|---|---:|---:|---:|---:|---:|"]
    for split in ("train", "val"):
        p = mine["pairs"][split]
        out.append(f"| {split} | {mine['papers'][split]:,} | {p['total']:,} | {p['title_abstract']:,} | "
                   f"{p['co_listed']:,} | {p['self_supervised']:,} |")
    out.append(f"| test | {mine['papers']['test']:,} | never in a pair | | | |")
    unseen = mine["unseen_listings"]
    out += ["", f"Listings held out whole: {unseen['test']['groups']} for the test ({unseen['test']['papers']} "
            f"papers), {unseen['val']['groups']} for the choices ({unseen['val']['papers']} papers). Hard negatives "
            f"per pair: {mine['negatives']['train']['per_pair']}.", "",
            "| negatives removed by filter | train | val |", "|---|---:|---:|"]
    removed = mine["negatives_removed"]
    out += [f"| `{f}` | {removed['train'][f]:,} | {removed['val'][f]:,} |" for f in removed["train"]]
    out += [f"| random fill (pairs left short) | {mine['negatives']['train']['random_fill']:,} | "
            f"{mine['negatives']['val']['random_fill']:,} |"]
    serving, similar = train["serving"], train["serving"]["similar"]
    out += ["", "## train", "", *_rows([
        ("steps", train["steps"]), ("training pairs", f"{train['train_pairs']:,}"),
        ("final training loss", f"{train['train_loss']:.4f}"),
        ("best checkpoint", f"step {train['best_checkpoint_step']}: {train['best_metric']} "
                            f"{train['best_metric_value']:.4f}"),
        ("device", train["device"]), ("search serves", f"the {serving['encoder']} encoder"),
        ("why", serving["reason"]), ("similar papers serve", f"the {similar['encoder']} encoder"),
        ("why", similar["reason"])])]
    out += ["", "## evaluate", "", "`reports/evaluate.md`, as the stage wrote it:", "",
            ("\n" + (ROOT / "reports/evaluate.md").read_text(encoding="utf-8")).replace("\n### ", "\n#### ")]
    out += ["", "## build_index", "", *_rows([
        ("papers", f"{index['papers']:,}"), ("index", f"{index['factory']}, {index['dim']}-d, "
                                                      f"{index['memory_bytes'] / 2**20:.1f} MiB"),
        ("recall@10 against exact search", f"{index['recall@10']:.3f} ({index['recall_queries']} queries)"),
        ("build", f"{index['mode']} ({index['mode_reason']})"),
        ("similar papers index", f"{index['similar_index']}, {index['similar_view']['tokens']} tokens, "
                                 f"recall@10 {index['similar_recall@10']:.3f}")])]
    return "\n".join(out) + "\n"


# --- benchmark results ---------------------------------------------------------------------------------------

def benchmark_pages() -> None:
    for path in sorted((ROOT / "benchmarks/results").glob("*.md")):
        with mkdocs_gen_files.open(f"results/benchmarks/{path.name}", "w") as f:
            f.write(path.read_text(encoding="utf-8"))
    index = (ROOT / "benchmarks/RESULTS.md").read_text(encoding="utf-8")
    with mkdocs_gen_files.open("results/benchmarks/index.md", "w") as f:
        f.write(index.replace("](results/", "]("))


with mkdocs_gen_files.open("reference/config.md", "w") as f:
    f.write(config_reference())
with mkdocs_gen_files.open("results/reports.md", "w") as f:
    f.write(reports_page())
benchmark_pages()
