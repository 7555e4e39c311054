"""Serve the `retrain` flow on the cron schedule in params.yaml (`retrain.schedule_cron`).

    python -m flows.serve [--params params.yaml] [--root .]

Creates (or updates) the deployment `retrain/weekly` on the Prefect server in use and runs its
scheduled flow runs until stopped (SIGTERM). With Prefect's ephemeral local server the schedule
is stored but runs need a long-lived server: point PREFECT_API_URL at one (`prefect server start`).
"""

import argparse
import sys
from pathlib import Path

from papersim.env import apply_offline_defaults
from papersim.errors import PapersimError
from papersim.lifecycle.retrain import RetrainConfig, retrain_config

DEPLOYMENT = "weekly"


def schedule_config(params: Path) -> RetrainConfig:
    return retrain_config(params)


def deployment(params: Path, root: str):
    """The retrain flow as a deployment with the params file's cron schedule (not yet applied)."""
    from prefect.schedules import Cron

    from flows.retrain import retrain

    cfg = schedule_config(params)
    return retrain.to_deployment(name=DEPLOYMENT, schedule=Cron(cfg.schedule_cron, timezone=cfg.schedule_timezone),
                                 parameters={"root": root},
                                 description=f"Retrain papersim on `{cfg.schedule_cron}` ({cfg.schedule_timezone})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--root", default=str(Path.cwd()), help="repository the scheduled runs retrain")
    args = parser.parse_args(argv)
    apply_offline_defaults()
    try:
        deploy = deployment(args.params, args.root)
    except PapersimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from prefect import serve

    serve(deploy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
