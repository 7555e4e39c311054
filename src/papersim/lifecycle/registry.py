"""The model registry's aliases: `champion` (what search and serving use) and `challenger`.

Every promotion pushes the previous champion onto a history kept as a tag of the registered
model, so `rollback` can put it back. A retention rule keeps the registry small over months of
hourly refreshes (`prune_refreshes`). MLflow calls go through papersim.lifecycle.tracking.
"""

from datetime import datetime, timezone
from pathlib import Path

from papersim.errors import PapersimError
from papersim.lifecycle import tracking
from papersim.lifecycle.refresh import REFRESH_TAG

CHAMPION, CHALLENGER = "champion", "challenger"


def _version(model_name: str, version: str) -> dict:
    found = tracking.model_version(model_name, version=str(version))
    if found is None:
        known = ", ".join(v["version"] for v in tracking.model_versions(model_name)) or "none"
        raise PapersimError(f"model {model_name!r} has no version {version} (versions: {known})")
    return found


def promote(model_name: str, version: str) -> str:
    """Make `version` the champion; the previous champion goes onto the rollback history.

    The history is written before the alias moves, and an entry already there is not added twice, so
    a promotion a kill interrupted is finished by promoting again (finish_interrupted)."""
    target = _version(model_name, version)
    current = tracking.model_version(model_name, alias=CHAMPION)
    if current is not None and current["version"] == target["version"]:
        return f"{model_name} v{target['version']} is already the champion"
    history = tracking.champion_history(model_name)
    if current is not None and history[-1:] != [current["version"]]:
        history.append(current["version"])
        tracking.set_champion_history(model_name, history)
    tracking.set_alias(model_name, CHAMPION, target["version"])
    if CHALLENGER in target["aliases"]:
        tracking.delete_alias(model_name, CHALLENGER)
    tracking.set_version_tags(model_name, target["version"],
                              {"papersim.promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    was = f" (was v{current['version']})" if current else ""
    return f"{model_name} v{target['version']} is now the champion{was}"


def finish_interrupted(model_name: str) -> str | None:
    """The newest version without an alias, registered by a flow run that did not finish (killed between
    registering the version and setting its alias): give it the alias its gate decided (its
    `papersim.gate` tag), so the registry is as fully updated as the run meant. Returns what was done."""
    found = tracking.model_versions(model_name)
    newest = found[0] if found else None
    if newest is None or newest["aliases"] or "papersim.gate" not in newest["tags"]:
        return None
    if tracking.run_status(newest["run_id"]) in ("RUNNING", "FINISHED"):
        return None  # a live run is registering it, or a finished one left it so on purpose
    if newest["tags"]["papersim.gate"] == CHAMPION:
        return f"finished the registration of v{newest['version']} a killed run left without its alias: " \
               + promote(model_name, newest["version"])
    return f"finished the registration of v{newest['version']} a killed run left without its alias: " \
           + mark_challenger(model_name, newest["version"])


def mark_challenger(model_name: str, version: str) -> str:
    tracking.set_alias(model_name, CHALLENGER, str(version))
    return f"{model_name} v{version} is the challenger; the champion is unchanged"


def rollback(model_name: str) -> str:
    """Give the champion alias back to the version that held it before the current one."""
    history = tracking.champion_history(model_name)
    if not history:
        raise PapersimError(f"model {model_name!r}: no earlier champion to roll back to")
    previous = history.pop()
    current = tracking.model_version(model_name, alias=CHAMPION)
    _version(model_name, previous)
    tracking.set_alias(model_name, CHAMPION, previous)
    tracking.set_champion_history(model_name, history)
    if current is not None:
        tracking.set_version_tags(model_name, current["version"], {
            "papersim.rolled_back_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    was = f" (v{current['version']} rolled back)" if current else ""
    return f"{model_name} v{previous} is the champion again{was}"


def prune_refreshes(model_name: str, keep: int, cache: Path) -> list[str]:
    """Retention: refresh versions older than the newest `keep` are archived: they leave the champion
    history first (a rollback never names a removed version), then their artifacts (an index each), their
    local copy under `cache` and their registry entry are removed; the runs that made them stay, with
    their metrics and tags. Trained versions and versions holding an alias are never removed. Returns the
    versions removed, oldest first."""
    found = tracking.model_versions(model_name)  # newest first
    refreshes = [v for v in found if REFRESH_TAG in v["tags"]]
    old = [v["version"] for v in refreshes[keep:] if not v["aliases"]][::-1]
    if not old:
        return []
    history = tracking.champion_history(model_name)
    kept = [v for v in history if v not in old]
    if kept != history:
        tracking.set_champion_history(model_name, kept)
    for number in old:
        tracking.delete_version(model_name, number, cache)
    return old


def table(model_name: str, primary_metric_tag: str = "papersim.primary") -> str:
    """One line per version, newest first: aliases, gate outcome and primary metric."""
    versions = tracking.model_versions(model_name)
    if not versions:
        return f"model {model_name!r}: no registered versions yet (run the retrain flow)"
    lines = [f"model {model_name!r} ({len(versions)} versions; champion history: "
             f"{', '.join('v' + v for v in tracking.champion_history(model_name)) or 'none'})",
             f"  {'version':<8} {'aliases':<22} {'gate':<11} {'primary':<9} created (UTC)   reason"]
    for v in versions:
        tags = v["tags"]
        created = datetime.fromtimestamp(v["created"] / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")
        lines.append(f"  v{v['version']:<7} {','.join(sorted(v['aliases'])) or '-':<22} "
                     f"{tags.get('papersim.gate', '-'):<11} {tags.get(primary_metric_tag, '-')[:8]:<9} "
                     f"{created:<15} {tags.get('papersim.gate_reason', '')[:90]}")
    return "\n".join(lines)


def resolve(model_name: str, alias_or_version: str, cache: Path) -> Path:
    """A local copy of the version named by an alias (champion, challenger) or a number."""
    if alias_or_version.isdigit():
        found = _version(model_name, alias_or_version)
    else:
        found = tracking.model_version(model_name, alias=alias_or_version)
        if found is None:
            raise PapersimError(f"model {model_name!r} has no {alias_or_version!r} version yet: run the retrain "
                                "flow first (`python -m flows.retrain`)")
    return tracking.download_model(model_name, found["version"], cache)
