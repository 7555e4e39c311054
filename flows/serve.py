"""Serve the `retrain` and `refresh` flows on the cron schedules in params.yaml.

    python -m flows.serve [--params params.yaml] [--root .]

Creates (or updates) two deployments on the Prefect server in use and runs their scheduled flow runs
until stopped (SIGTERM):
- `retrain/weekly` on `retrain.schedule_cron`: drift check, retrain, gate, registry (flows.retrain);
- `refresh/scheduled` on `retrain.refresh_cron`: new papers into the champion's index (flows.refresh).
One run at a time per deployment (Prefect's deployment concurrency limit): a refresh that comes due
while the last one still runs is cancelled (the next slot serves the same papers), a retrain waits for
the last retrain. Across the two, the repository's run lock: a refresh that finds a retrain running
skips with its reason logged and the next slot after the retrain serves the new papers. With Prefect's
ephemeral local server the schedules are stored but runs need a long-lived server: point
PREFECT_API_URL at one (`prefect server start`).
"""

import argparse
import sys
from pathlib import Path

from papersim.env import apply_offline_defaults
from papersim.errors import PapersimError
from papersim.lifecycle.retrain import RetrainConfig, retrain_config

DEPLOYMENT = "weekly"  # retrain/weekly
REFRESH_DEPLOYMENT = "scheduled"  # refresh/scheduled


def schedule_config(params: Path) -> RetrainConfig:
    return retrain_config(params)


def one_at_a_time(collision: str):
    """A deployment concurrency limit of one run; `collision`: enqueue or cancel_new."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy(collision.upper()))


def deployment(params: Path, root: str):
    """The retrain flow as a deployment with the params file's cron schedule (not yet applied)."""
    from prefect.schedules import Cron

    from flows.retrain import retrain

    cfg = schedule_config(params)
    return retrain.to_deployment(name=DEPLOYMENT, schedule=Cron(cfg.schedule_cron, timezone=cfg.schedule_timezone),
                                 parameters={"root": root}, concurrency_limit=one_at_a_time("enqueue"),
                                 description=f"Retrain papersim on `{cfg.schedule_cron}` ({cfg.schedule_timezone})")


def refresh_deployment(params: Path, root: str):
    """The refresh flow as a deployment with the params file's refresh cron schedule (not yet applied)."""
    from prefect.schedules import Cron

    from flows.refresh import refresh

    cfg = schedule_config(params)
    return refresh.to_deployment(name=REFRESH_DEPLOYMENT,
                                 schedule=Cron(cfg.refresh_cron, timezone=cfg.schedule_timezone),
                                 parameters={"root": root}, concurrency_limit=one_at_a_time("cancel_new"),
                                 description=f"Serve new papers with the champion's model on `{cfg.refresh_cron}` "
                                             f"({cfg.schedule_timezone})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--root", default=str(Path.cwd()), help="repository the scheduled runs retrain and refresh")
    args = parser.parse_args(argv)
    apply_offline_defaults()
    try:
        deploys = [deployment(args.params, args.root), refresh_deployment(args.params, args.root)]
    except PapersimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from prefect import serve

    serve(*deploys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
