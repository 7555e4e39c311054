"""Decisions of the retraining flow: retrain or skip, promote or keep the champion.

Pure functions over reports and a frozen config (params.yaml section `retrain`); the flow in
flows/retrain.py runs the stages, the registry calls and the logging around them.
"""

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from papersim.errors import PapersimError
from papersim.evaluation.significance import (PairedDifference, clustered_difference, mean_of_means_difference,
                                              paired_difference, verdict)
from papersim.lifecycle.drift import CorpusChange, EmbeddingDrift

# What a model is built from, the corpus aside: the corpus is counted paper by paper (drift), so a source
# added to ingest.sources is new papers, served by a refresh or retrained on, not a new recipe.
PIPELINE_SECTIONS = ("mine_pairs", "train", "evaluate", "build_index")
# What a refresh builds with besides the champion's model: a workspace whose sections differ would
# register an index the champion's params do not describe.
REFRESH_SECTIONS = ("build_index", "evaluate")
GATE_RULES = ("significant", "mean")


@dataclass(frozen=True)
class RetrainConfig:
    model_name: str = "papersim"              # registered model in the MLflow model registry
    gate_sets: list[str] = field(default_factory=list)  # evaluate.json sets the gate reads; [] = every set
    primary_metric: str = "served/ndcg@10"    # system/metric, averaged over gate_sets
    min_delta: float = 0.0                    # promote when primary(candidate) - primary(champion) >= this
    # significant: ... and the 95% bootstrap interval of that gain (queries paired with the champion's) lies
    # above 0, and no gate set is significantly worse: a weekly retrain does not swap champions on noise.
    # mean: any mean gain >= min_delta promotes (the rule before; churns the champion on noise)
    gate_rule: str = "significant"
    guard_metrics: list[str] = field(default_factory=list)  # system/metric per set: none may drop more than
    max_regression: float = 0.01              # ... this (absolute), or the candidate stays challenger
    floor_baselines: list[str] = field(default_factory=lambda: ["bm25", "base", "base_hybrid"])  # no papersim
    floor_tolerance: float = 0.0              # primary may not trail the best baseline by more, on any gate set
    similar_set: str = "similar"              # evaluate.json's "papers similar to this one" block ("" = not gated;
    # its `_unseen` twin, listings held out of training, is read too: a candidate may not lose there beyond noise)
    similar_metric: str = "served/precision@10"  # its primary: floor and champion comparison as for search
    schedule_cron: str = "0 3 * * 1"          # flows.serve: retrain Mondays 03:00
    schedule_timezone: str = "UTC"
    refresh_cron: str = "0 * * * *"           # flows.serve: refresh the champion's index every hour
    # retrain when new+changed+removed papers exceed this share of the champion's corpus; at or below it
    # (same params, no embedding drift) the champion's model serves them through a refresh
    min_changed_share: float = 0.1
    drift_sample_size: int = 500              # papers encoded by the champion for the two-sample test
    drift_permutations: int = 200
    drift_p_value: float = 0.01               # embedding drift when the MMD permutation p-value is below
    lock_timeout_s: float = 900.0             # how long a retrain waits for a running refresh or retrain
    # how long a refresh waits for another refresh (~1 min); behind a retrain it skips at once: the next
    # slot serves the papers, and a retrain may run for hours
    refresh_lock_timeout_s: float = 300.0
    # refresh versions kept (with their indexes) for rollback; older ones are archived: a day of hourly
    # refreshes to step back through, trained versions always kept
    keep_refreshes: int = 24

    def __post_init__(self) -> None:
        for name in (self.primary_metric, *self.guard_metrics, self.similar_metric):
            if name.count("/") != 1:
                raise PapersimError(f"metric {name!r}: write it as system/metric, e.g. hybrid/ndcg@10")
        if self.gate_rule not in GATE_RULES:
            raise PapersimError(f"gate_rule must be one of {', '.join(GATE_RULES)}, got {self.gate_rule!r}")
        if self.min_delta < 0 or self.max_regression < 0 or self.floor_tolerance < 0:
            raise PapersimError("min_delta, max_regression and floor_tolerance must be >= 0")
        if not 0 <= self.min_changed_share < 1:
            raise PapersimError(f"min_changed_share must be in [0, 1), got {self.min_changed_share}")
        if not 0 < self.drift_p_value < 1:
            raise PapersimError(f"drift_p_value must be in (0, 1), got {self.drift_p_value}")
        if self.drift_sample_size < 10 or self.drift_permutations < 10:
            raise PapersimError("drift_sample_size and drift_permutations must be >= 10")
        for name in ("schedule_cron", "refresh_cron"):
            if len(getattr(self, name).split()) != 5:
                raise PapersimError(f"{name} {getattr(self, name)!r}: five fields (minute hour day month weekday)")
        if self.lock_timeout_s < 0 or self.refresh_lock_timeout_s < 0:
            raise PapersimError("lock_timeout_s and refresh_lock_timeout_s must be >= 0")
        if self.keep_refreshes < 1:
            raise PapersimError(f"keep_refreshes must be >= 1 (the serving refresh), got {self.keep_refreshes}")


def retrain_config(params_path: Path) -> RetrainConfig:
    """params.yaml's `retrain` section (all defaults when the file or the section is missing)."""
    from papersim.config import build_config, read_params

    section = read_params(params_path).get("retrain", {}) if Path(params_path).is_file() else {}
    return build_config(RetrainConfig, section, f"{params_path}: retrain")


def params_fingerprint(params: Mapping[str, Any], sections: tuple[str, ...] = PIPELINE_SECTIONS) -> str:
    """SHA-256 of the pipeline's sections of params.yaml: equal fingerprints, same recipe."""
    recipe = {name: params.get(name) for name in sections}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()


def refresh_params_differ(workspace: Mapping[str, Any], champion: Mapping[str, Any]) -> list[str]:
    """The sections a refresh builds with (REFRESH_SECTIONS) where the workspace's params.yaml is not the
    one the champion's model was registered with."""
    return [name for name in REFRESH_SECTIONS
            if params_fingerprint(workspace, (name,)) != params_fingerprint(champion, (name,))]


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    refresh: bool = False  # no retrain, but the corpus changed: the champion's model serves it through a refresh


def retrain_needed(champion_exists: bool, params_changed: bool, change: CorpusChange | None,
                   drift: EmbeddingDrift | None, cfg: RetrainConfig, force: bool = False,
                   since_refresh: CorpusChange | None = None, floor_warning: str = "") -> RetrainDecision:
    """Retrain unless the champion's model was built from these params and the corpus has not moved beyond
    the thresholds since that model was trained (`change`: cumulative, whatever refreshes served since);
    papers the champion's index does not serve yet (`since_refresh`; None: as `change`) within them are a
    refresh, not a retrain. `floor_warning`: the champion's latest refresh served below the baseline floor on
    the current corpus (its tag): a retrain is due."""
    if force:
        return RetrainDecision(True, "forced by the caller")
    if not champion_exists:
        return RetrainDecision(True, "no champion in the registry yet")
    reasons = []
    if params_changed:
        reasons.append("params differ from the champion's")
    if change is not None and change.share > cfg.min_changed_share:
        reasons.append(f"corpus changed since the model was trained: {change.new} new, {change.changed} changed, "
                       f"{change.removed} removed papers ({change.share:.2%} > {cfg.min_changed_share:.2%})")
    if drift is not None and drift.p_value < cfg.drift_p_value:
        reasons.append(f"embedding drift since the model was trained: MMD^2 {drift.mmd2:.4g}, p {drift.p_value:.3g} "
                       f"< {cfg.drift_p_value}")
    if floor_warning:
        reasons.append(f"the champion's latest refresh trails a baseline on the current corpus: {floor_warning}")
    if reasons:
        return RetrainDecision(True, "; ".join(reasons))
    drifted = f", MMD^2 p {drift.p_value:.3g}" if drift is not None else ""
    trained = (f"{change.share:.2%} changed since the model was trained (retrain above "
               f"{cfg.min_changed_share:.2%})") if change is not None else ""
    pending = since_refresh if since_refresh is not None else change
    if pending is not None and pending.new + pending.changed + pending.removed > 0:
        return RetrainDecision(False, f"refresh: {pending.new} new, {pending.changed} changed, {pending.removed} "
                                      f"removed papers since the champion's index; {trained}{drifted}, same params "
                                      "as the champion: its model serves them", refresh=True)
    return RetrainDecision(False, f"nothing to do: the champion's index serves the current corpus; {trained}"
                                  f"{drifted}, same params as the champion")


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    primary: float                 # candidate's primary metric (mean over the gate sets)
    champion_primary: float | None
    deltas: dict[str, float]       # "set/system/metric" -> candidate - champion
    floor: dict[str, float] = field(default_factory=dict)  # "set/baseline" -> primary - that best baseline
    interval: list[float] | None = None  # 95% interval of primary - champion's (gate_rule significant)
    paired: dict[str, dict[str, float]] = field(default_factory=dict)  # "set/system/metric" -> diff, ci, p


def _value(report: Mapping[str, Any], set_name: str, metric: str, who: str) -> float:
    system, name = metric.split("/")
    try:
        value = report[set_name][system][name]
    except (KeyError, TypeError):
        raise PapersimError(f"{who}'s eval report has no {set_name}/{metric}: check retrain.gate_sets, "
                            "primary_metric and guard_metrics against evaluate.systems") from None
    return float(value)


def gate_sets(report: Mapping[str, Any], cfg: RetrainConfig) -> list[str]:
    """The search sets the primary metric is averaged over (the similar task is gated on its own: its
    blocks, known and unseen listings, are never search sets)."""
    similar = (cfg.similar_set, unseen_set(cfg)) if cfg.similar_set else ()
    sets = cfg.gate_sets or sorted(k for k, v in report.items() if isinstance(v, Mapping) and k not in similar)
    if not sets:
        raise PapersimError("the eval report has no evaluation sets to gate on")
    return list(sets)


def primary_value(report: Mapping[str, Any], cfg: RetrainConfig, who: str = "candidate") -> float:
    sets = gate_sets(report, cfg)
    return sum(_value(report, s, cfg.primary_metric, who) for s in sets) / len(sets)


def similar_gated(report: Mapping[str, Any], cfg: RetrainConfig) -> bool:
    """The similar task is gated when configured and the report scored it (a corpus without co-listing
    groups has nothing to score it on)."""
    return bool(cfg.similar_set) and isinstance(report.get(cfg.similar_set), Mapping)


def unseen_set(cfg: RetrainConfig) -> str:
    """evaluate.json's block of the similar task on listings held out of training whole."""
    return f"{cfg.similar_set}_unseen"


def similar_blocks(report: Mapping[str, Any], cfg: RetrainConfig) -> list[str]:
    """The similar task's blocks the gate reads: known listings, then unseen ones where the report has them
    (a corpus whose test split holds no whole listing has none)."""
    if not similar_gated(report, cfg):
        return []
    return [cfg.similar_set, *([unseen_set(cfg)] if isinstance(report.get(unseen_set(cfg)), Mapping) else [])]


def baseline_floor(candidate: Mapping[str, Any], cfg: RetrainConfig,
                   beyond_noise: bool = False) -> tuple[dict[str, float], list[str]]:
    """Per gate set, the primary metric minus the best baseline's same metric (bm25, base, their fusion:
    what a user has without papersim); the same for the similar task's metric on its blocks (known and
    unseen listings); and the sets where it trails by more than floor_tolerance. Under gate_rule
    significant the similar task trails only when served is below that baseline beyond noise: `verdict`
    of its paired difference, clustered by listing (evaluate's served_vs), shifted by floor_tolerance, is
    "worse". One listing's papers move together: 35 papers of 14 listings are 14 samples, and a mean 0.01
    behind on them is noise. `beyond_noise` applies that rule to every set (a refresh: the model is the
    one that passed the floor, only the sets changed)."""
    checks = [(name, cfg.primary_metric) for name in gate_sets(candidate, cfg)]
    similar = similar_blocks(candidate, cfg)
    checks += [(name, cfg.similar_metric) for name in similar]
    margins, failures = {}, []
    for name, primary in checks if cfg.floor_baselines else []:
        metric = primary.split("/")[1]
        values = {b: _value(candidate, name, f"{b}/{metric}", "candidate") for b in cfg.floor_baselines}
        best = max(values, key=lambda b: values[b])
        margin = _value(candidate, name, primary, "candidate") - values[best]
        margins[f"{name}/{best}"] = margin
        versus = candidate.get(name, {}).get("served_vs", {}).get(best) if primary.startswith("served/") else None
        versus = versus if versus is not None and f"{metric}_diff" in versus else None  # on this metric only
        if ((name in similar or beyond_noise) and cfg.gate_rule == "significant" and versus is not None
                and not math.isnan(margin)):
            tolerance = cfg.floor_tolerance  # worse than -floor_tolerance, as verdict reads "worse than 0"
            p_value = versus.get("p_value", 0.0)  # a report without one: its interval alone
            shifted = PairedDifference(versus[f"{metric}_diff"] + tolerance, versus["ci_low"] + tolerance,
                                       versus["ci_high"] + tolerance, p_value, 0)
            if verdict(shifted) == "worse":
                by = ", by listing" if name in similar else ""
                p_text = f", p {p_value:.4f}" if "p_value" in versus else ""
                failures.append(f"{name}: {primary} trails {best}/{metric} by {-margin:.4f} (95% CI of the "
                                f"difference {versus['ci_low']:+.4f} to {versus['ci_high']:+.4f}{p_text}{by})")
        elif math.isnan(margin) or margin < -cfg.floor_tolerance:
            failures.append(f"{name}: {primary} trails {best}/{metric} by {-margin:.4f}")
    return margins, failures


def paired_scores(candidate_queries, champion_queries, set_name: str, metric: str) -> tuple[Any, Any, Any]:
    """(candidate, champion, clusters) per-query values of `metric` (system/metric) on one set, paired by query
    id, from evaluate_per_query.parquet tables (columns set, system, query_id, one per metric, and `cluster`
    where a set's queries are clustered: the similar task's listings); clusters None otherwise."""
    system, name = metric.split("/")
    picked = []
    for frame, who in ((candidate_queries, "candidate"), (champion_queries, "champion")):
        rows = frame[(frame["set"] == set_name) & (frame["system"] == system)] if name in frame else frame[:0]
        if rows.empty:
            raise PapersimError(f"the {who}'s per-query scores have no {set_name}/{metric}: re-run its evaluate "
                                "stage, or set retrain.gate_rule: mean")
        picked.append(rows[["query_id", name, *(["cluster"] if who == "candidate" and "cluster" in rows else [])]])
    both = picked[0].merge(picked[1], on="query_id", suffixes=("_candidate", "_champion"))
    if not len(both) == len(picked[0]) == len(picked[1]):
        raise PapersimError(f"{set_name}: the candidate and the champion were scored on different queries "
                            f"({len(picked[0])} and {len(picked[1])}, {len(both)} shared): re-score the champion")
    clusters = both["cluster"] if "cluster" in both and both["cluster"].notna().all() else None
    return (both[f"{name}_candidate"].to_numpy(), both[f"{name}_champion"].to_numpy(),
            None if clusters is None else clusters.astype(str).tolist())


def _paired_summary(d: PairedDifference) -> dict[str, float]:
    return {"diff": d.mean, "ci_low": d.low, "ci_high": d.high, "p_value": d.p_value, "n": d.n}


def gate(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, cfg: RetrainConfig,
         candidate_queries=None, champion_queries=None) -> GateDecision:
    """Promote iff the candidate beats the best baseline (floor), its primary metric improves on the
    champion's by >= min_delta (gate_rule significant: and the gain, its queries paired with the
    champion's, is "better" by `verdict`, or the similar task's metric on known listings gains >= min_delta
    and is "better"; and no gate set, the similar task's known and unseen listings included, is "worse")
    and no guard metric drops by > max_regression. gate_rule mean: both tasks must gain >= min_delta.

    Both reports must come from the same evaluation sets (the flow checks their content hashes);
    `*_queries` are their evaluate_per_query.parquet tables (needed by gate_rule significant).
    """
    primary = primary_value(candidate, cfg)
    floor, below = baseline_floor(candidate, cfg)
    if below:
        return GateDecision(False, f"below the baseline floor (tolerance {cfg.floor_tolerance}): "
                                   + "; ".join(below), primary, None, {}, floor)
    if champion is None:
        return GateDecision(True, "first model: no champion to compare with; beats every baseline", primary, None,
                            {}, floor)
    sets = gate_sets(candidate, cfg)
    champion_primary = primary_value(champion, cfg, "champion")
    deltas = {f"{s}/{m}": _value(candidate, s, m, "candidate") - _value(champion, s, m, "champion")
              for s in sets for m in dict.fromkeys([cfg.primary_metric, *cfg.guard_metrics])}
    improvement = primary - champion_primary
    regressions = {k: d for k, d in deltas.items()
                   if k.split("/", 1)[1] in cfg.guard_metrics and d < -cfg.max_regression}
    summary = f"{cfg.primary_metric} {primary:.4f} vs champion {champion_primary:.4f} ({improvement:+.4f}"
    checks = [(s, cfg.primary_metric) for s in sets]
    key = f"{cfg.similar_set}/{cfg.similar_metric}"  # the known listings: the similar task's primary
    for block in similar_blocks(candidate, cfg):
        deltas[f"{block}/{cfg.similar_metric}"] = (_value(candidate, block, cfg.similar_metric, "candidate")
                                                   - _value(champion, block, cfg.similar_metric, "champion"))
        checks.append((block, cfg.similar_metric))

    def decided(promote: bool, reason: str, interval=None, paired=None) -> GateDecision:
        return GateDecision(promote, reason, primary, champion_primary, deltas, floor, interval, paired or {})

    if cfg.gate_rule == "mean":
        summary += ")" + (f"; {key} {deltas[key]:+.4f}" if similar_gated(candidate, cfg) else "")
        if similar_gated(candidate, cfg) and (math.isnan(deltas[key]) or deltas[key] < cfg.min_delta):
            return decided(False, f"{summary}: the similar task below min_delta {cfg.min_delta}")
        if math.isnan(improvement) or improvement < cfg.min_delta:
            return decided(False, f"{summary}: below min_delta {cfg.min_delta}")
    else:
        if candidate_queries is None or champion_queries is None:
            raise PapersimError("gate_rule significant pairs the candidate's per-query scores with the champion's: "
                                "give both evaluate_per_query tables (or set retrain.gate_rule: mean)")
        scores = {f"{s}/{m}": paired_scores(candidate_queries, champion_queries, s, m) for s, m in checks}
        compared = {k: paired_difference(a, b) if clusters is None else clustered_difference(a, b, clusters)
                    for k, (a, b, clusters) in scores.items()}
        search = mean_of_means_difference([a - b for k, (a, b, _) in scores.items() if k.split("/")[0] in sets])
        paired, interval = {k: _paired_summary(d) for k, d in compared.items()}, [search.low, search.high]
        summary += f", 95% CI {search.low:+.4f} to {search.high:+.4f}, p {search.p_value:.4f})"
        similar = compared.get(key) if similar_gated(candidate, cfg) else None
        if similar is not None:
            summary += (f"; {key} {similar.mean:+.4f} (95% CI {similar.low:+.4f} to {similar.high:+.4f}, "
                        f"p {similar.p_value:.4f})")
        worse = [f"{k} {d.mean:+.4f} (95% CI {d.low:+.4f} to {d.high:+.4f}, p {d.p_value:.4f})"
                 for k, d in compared.items() if verdict(d) == "worse"]
        if worse:
            return decided(False, f"{summary}: significantly worse on {'; '.join(worse)}", interval, paired)
        # Either task may earn the promotion: papers similar to this one is the product's own task, and a
        # candidate that is significantly better there, and no worse at search, should not wait for search.
        search_gain = not math.isnan(improvement) and improvement >= cfg.min_delta
        search_better = search_gain and verdict(search) == "better"
        similar_better = similar is not None and similar.mean >= cfg.min_delta and verdict(similar) == "better"
        if not (similar_better or search_better):
            if not search_gain and similar is None:
                return decided(False, f"{summary}: below min_delta {cfg.min_delta}", interval, paired)
            return decided(False, f"{summary}: not significantly better (the interval reaches 0 or p >= 0.05"
                                  f"{' on both tasks' if similar is not None else ''}): the champion stays",
                           interval, paired)
        better = f"significantly better at {'search' if search_better else 'similar papers'}"
    if regressions:
        worst = ", ".join(f"{k} {d:+.4f}" for k, d in sorted(regressions.items(), key=lambda kv: kv[1]))
        return decided(False, f"{summary}, but regressions beyond {cfg.max_regression}: {worst}",
                       *((interval, paired) if cfg.gate_rule == "significant" else ()))
    better = f"{better}, no gate set significantly worse, " if cfg.gate_rule == "significant" else ""
    return decided(True, f"{summary} >= min_delta {cfg.min_delta}, {better}no guard metric drops more than "
                         f"{cfg.max_regression}, beats every baseline",
                   *((interval, paired) if cfg.gate_rule == "significant" else ()))


def needs_rescore(candidate: Mapping[str, Any], champion: Mapping[str, Any], cfg: RetrainConfig,
                  champion_has_queries: bool = True) -> bool:
    """The champion's report cannot be compared: a gate set changed (content hash), it predates the
    primary metric's system (e.g. `served`), or gate_rule significant needs per-query scores the version
    was registered without. The evaluate stage then re-scores the champion."""
    if cfg.gate_rule == "significant" and not champion_has_queries:
        return True
    want, have = eval_set_hashes(candidate), eval_set_hashes(champion)
    checks = [(s, cfg.primary_metric.split("/")[0]) for s in gate_sets(candidate, cfg)]
    checks += [(block, cfg.similar_metric.split("/")[0]) for block in similar_blocks(candidate, cfg)]
    return any(want.get(s) is None or want.get(s) != have.get(s) or system not in champion.get(s, {})
               for s, system in checks)


def experiment_decision(decision: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A run with overrides is an experiment: it is registered (challenger at most) and never promoted,
    whatever its gate said; shipping its recipe means writing it into params.yaml and retraining."""
    gate = "passed" if decision["promote"] else "did not pass"
    return {**decision, "promote": False,
            "reason": f"a run with overrides ({', '.join(sorted(overrides))}) never replaces the champion; its gate "
                      f"{gate}: {decision['reason']}"}


def gate_metrics(decision: GateDecision) -> dict[str, float]:
    """The gate's numbers as flow-run metrics (MLflow metric names take no slashes here: dots)."""
    return {"gate.primary": decision.primary,
            **({"gate.champion_primary": decision.champion_primary} if decision.champion_primary is not None else {}),
            **({"gate.ci_low": decision.interval[0], "gate.ci_high": decision.interval[1]}
               if decision.interval else {}),
            **{f"gate.delta.{k.replace('/', '.')}": v for k, v in decision.deltas.items()},
            **{f"gate.floor.{k.replace('/', '.')}": v for k, v in decision.floor.items()}}


def eval_set_hashes(report: Mapping[str, Any]) -> dict[str, str]:
    """set -> content hash, as evaluate writes them into evaluate.json."""
    return {name: value["content_hash"] for name, value in report.items()
            if isinstance(value, Mapping) and "content_hash" in value}
