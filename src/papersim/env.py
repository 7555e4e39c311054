"""Offline and no-telemetry defaults for every process that runs a stage, a flow or a test."""

import os
import sys
from pathlib import Path

# Each variable silences one library's network use; see the README's "Offline" section.
OFFLINE_DEFAULTS: dict[str, str] = {
    "DO_NOT_TRACK": "true",  # MLflow honours only the literal "true"
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def apply_offline_defaults() -> None:
    """Set the offline variables unless the user already chose a value."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def dvc_executable() -> str:
    """The dvc next to this Python (the project's virtual environment), else the one on PATH."""
    dvc = Path(sys.executable).with_name("dvc")
    return str(dvc) if dvc.exists() else "dvc"
