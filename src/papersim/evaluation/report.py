"""What evaluate writes: evaluate.json, a readable table with paired comparisons, per-query scores, recall curves."""

from pathlib import Path
from typing import Mapping

import pandas as pd

from papersim.evaluation.evaluate import SetResult
from papersim.evaluation.significance import PairedDifference, verdict
from papersim.progress import working_on


def eval_report(results: Mapping[str, SetResult]) -> dict:
    """evaluate.json: {set: {system: {metric: value}, served_vs: {system: {...}}, ndcg@10_ci95: {system: {low,
    high}}, n_queries, n_skipped_queries, content_hash, sample (a capped set only)}}."""
    report = {}
    for name, r in results.items():
        with working_on(name):
            versus = {system: difference(d, r.compared_metric) for system, d in r.served_versus().items()}
            gain = r.training_gain()
            intervals = {f"{metric}_ci95": {system: {"low": low, "high": high} for system, (low, high) in per.items()}
                         for metric, per in r.intervals().items()}
        report[name] = {**r.scores, **({"served_vs": versus} if versus else {}),
                        **({"trained_vs_base": difference(gain, r.compared_metric)} if gain else {}), **intervals,
                        "n_queries": r.n_queries, "n_skipped_queries": r.n_skipped, "content_hash": r.content_hash,
                        **({"sample": r.sample} if r.sample else {}), **({"facts": r.facts} if r.facts else {})}
    return report


def difference(d: PairedDifference, metric: str) -> dict:
    """evaluate.json's form of a paired comparison."""
    return {f"{metric}_diff": d.mean, "ci_low": d.low, "ci_high": d.high, "p_value": d.p_value}


def comparison_line(label: str, d: PairedDifference, metric: str) -> str:
    return (f"- {label}: {metric} {d.mean:+.4f} (95% CI {d.low:+.4f} to {d.high:+.4f}; "
            f"paired randomisation p = {d.p_value:.4f}; {verdict(d)})")


def comparison_lines(result: SetResult) -> list[str]:
    """One line per system: served's mean difference on the set's compared metric, its 95% CI and the
    randomisation p-value; then what training adds (trained against base)."""
    lines = [comparison_line(f"served vs {system}", d, result.compared_metric)
             for system, d in result.served_versus().items()]
    gain = result.training_gain()
    if gain is not None:
        lines.append(comparison_line("trained vs base (what training adds)", gain, result.compared_metric))
    return lines


def markdown_table(results: Mapping[str, SetResult], notes: list[str]) -> str:
    """A readable table per set (one row per system, best value in bold), then served against each system."""
    lines = []
    for name, r in results.items():
        metrics = list(dict.fromkeys(m for s in r.scores.values() for m in s))
        sampled = (f"; a seeded sample of {r.sample['queries']} of {r.sample['of_queries']} queries over "
                   f"{r.sample['docs']} of {r.sample['of_docs']} papers") if r.sample else ""
        held = (f"; {r.facts['papers']} held-out papers asking for their co-listed papers, "
                f"{r.facts['groups']} co-listing groups, {r.facts['relevant_per_paper']} relevant papers each"
                ) if r.facts else ""
        lines += [f"### {name} ({r.n_queries} queries, {r.n_skipped} skipped: no relevant document{sampled}{held})",
                  "",
                  "| system | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        best = {m: max(s.get(m, float("-inf")) for s in r.scores.values()) for m in metrics}
        for system, values in r.scores.items():
            cells = [f"**{values[m]:.4f}**" if values.get(m) == best[m] else f"{values.get(m, float('nan')):.4f}"
                     for m in metrics]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
        lines.append("")
        with working_on(name):
            comparisons = comparison_lines(r)
        if comparisons:
            lines += comparisons + [""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def per_query_table(results: Mapping[str, SetResult]) -> pd.DataFrame:
    """One row per set, system and scored query, one column per metric (evaluate_per_query.parquet)."""
    frames = [pd.DataFrame({"set": name, "system": system, "query_id": r.query_ids, **values,
                            **({"cluster": r.clusters} if r.clusters else {})})
              for name, r in results.items() for system, values in r.per_query.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["set", "system", "query_id"])


def curve_table(results: Mapping[str, SetResult]) -> pd.DataFrame:
    """Recall@k per k (rows) for each set/system (columns `<set>/<system>`)."""
    columns = {f"{name}/{system}": curve for name, r in results.items() for system, curve in r.curves.items()}
    frame = pd.DataFrame(columns)
    frame.index.name = "k"
    return frame.reset_index()


def save_curve_plot(table: pd.DataFrame, path: Path) -> None:
    from papersim.plots import pyplot

    plt = pyplot()

    sets = sorted({c.split("/")[0] for c in table.columns if c != "k"})
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for column in (c for c in table.columns if c.startswith(f"{name}/")):
            ax.plot(table["k"], table[column], marker="o", label=column.split("/")[1])
        ax.set(xscale="log", xlabel="k", ylabel="recall@k", title=name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
