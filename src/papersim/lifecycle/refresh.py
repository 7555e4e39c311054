"""Decisions of a refresh: the champion's model over the current corpus, registered without retraining.

The model and the corpus it indexes change at different rates. A refresh keeps the champion's encoder,
fusion and similar-papers settings, builds its index over the current corpus (build_index encodes only
what is new or changed, through the embedding cache and its incremental path; removed papers drop out)
and registers the result as a new version carrying the same model. There is no significance test (the
model did not change); the data checks decide: ingest's validation (before this) and the index's recall@10
against exact search; the served system below the baseline floor on the gate sets is a warning the next
retrain check acts on.
Pure functions over reports and the retrain config; flows/refresh.py runs the stages around them.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from papersim.lifecycle.drift import CorpusChange
from papersim.lifecycle.retrain import RetrainConfig, baseline_floor, primary_value

REFRESH_TAG = "papersim.refresh_of"  # on a refreshed version: the champion it replaced
MODEL_TAG = "papersim.model_version"  # ... and the version whose training produced the model it carries


WARNING_TAG = "papersim.refresh_warning"  # on a refreshed version: served trails a baseline on the current corpus


@dataclass(frozen=True)
class RefreshCheck:
    passed: bool
    reason: str
    primary: float                # the served primary metric on the current gate sets (as the gate reads it)
    floor: dict[str, float]       # "set/baseline" -> primary - that best baseline
    warnings: tuple[str, ...] = ()  # served below the floor beyond noise: served anyway, the next retrain check retrains


def check_refresh(report: Mapping[str, Any], index_info: Mapping[str, Any], cfg: RetrainConfig,
                  target_recall: float) -> RefreshCheck:
    """The data checks of a refreshed index. Refused: its recall@10 against exact search misses the target
    the build tuned for (every index kind, the similar task's own included): a broken index. Served with
    a warning: the served system below the baseline floor on the current gate sets (under gate_rule
    significant, beyond noise). The model is the one that passed that floor; only the corpus changed, and
    a refused refresh would leave the new papers unserved until someone acts, on evidence as thin as a
    dozen listings. The warning is a tag of the version, and the next retrain check retrains on it."""
    failures = [f"{name} {index_info[name]:.3f} < target {target_recall}" for name in ("recall@10", "similar_recall@10")
                if name in index_info and float(index_info[name]) < target_recall]
    floor, below = baseline_floor(report, cfg, beyond_noise=True)
    primary = primary_value(report, cfg)
    if failures:
        return RefreshCheck(False, "refused: " + "; ".join(failures), primary, floor, tuple(below))
    recall = f"recall@10 {float(index_info.get('recall@10', 1.0)):.3f}"
    margin = min(floor.values()) if floor else float("nan")
    if below:
        return RefreshCheck(True, f"data checks passed: {recall}; served anyway although it trails a baseline on the "
                                  f"current corpus ({'; '.join(below)}): the next retrain check retrains",
                            primary, floor, tuple(below))
    return RefreshCheck(True, f"data checks passed: {recall}, served at or above the baseline floor "
                              f"(smallest margin {margin:+.4f})", primary, floor)


def changed_anything(change: CorpusChange) -> bool:
    return change.new + change.changed + change.removed > 0


def describe_change(change: CorpusChange) -> str:
    return f"{change.new} added, {change.changed} changed, {change.removed} removed papers"


def model_version(champion: Mapping[str, Any]) -> str:
    """The version whose training produced the champion's model: itself, or what the refresh it is carried."""
    return str(champion["tags"].get(MODEL_TAG, champion["version"]))


def refresh_description(champion: Mapping[str, Any], change: CorpusChange, check: RefreshCheck) -> str:
    """The registered version's description: a refresh, the model version it carries, what changed."""
    return (f"Refresh of the v{model_version(champion)} model: a new index ({describe_change(change)}), "
            f"replacing champion v{champion['version']}. No retraining, so no significance test: {check.reason}.")


def refresh_decision(champion: Mapping[str, Any], change: CorpusChange, check: RefreshCheck,
                     metric: str) -> dict[str, Any]:
    """What versions.register records as the version's gate outcome (promote when the checks passed)."""
    return {"promote": check.passed, "reason": f"refresh of the v{model_version(champion)} model "
                                               f"({describe_change(change)}); {check.reason}",
            "primary": check.primary, "primary_metric": metric}


def refresh_tags(champion: Mapping[str, Any], change: CorpusChange, check: RefreshCheck | None = None) -> dict[str, str]:
    """Tags naming the refreshed champion and the model version carried (a refresh of a refresh carries the
    same model), and the floor warning of its checks when there is one."""
    warning = {WARNING_TAG: "; ".join(check.warnings)} if check is not None and check.warnings else {}
    return {REFRESH_TAG: str(champion["version"]), MODEL_TAG: model_version(champion),
            "papersim.refresh.added": str(change.new), "papersim.refresh.changed": str(change.changed),
            "papersim.refresh.removed": str(change.removed), **warning}
