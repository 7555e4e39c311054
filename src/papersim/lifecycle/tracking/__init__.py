"""MLflow behind one door: the only part of papersim that imports mlflow.

Defaults need nothing started by hand: a SQLite store at mlruns/mlflow.db under the working
directory (the repository root when run by DVC), artifacts beside it; MLFLOW_TRACKING_URI
overrides. A parent run id in PAPERSIM_PARENT_RUN_ID (set by the retraining flow) nests a
stage's run under it, with the tags in PAPERSIM_RUN_TAGS (JSON). `runs`: stage and flow runs;
`models`: the model registry (a pyfunc of encoder + index). Callers use `tracking.<name>`.
"""

from papersim.lifecycle.tracking.models import (
                                                HISTORY_TAG,
                                                MODEL_ARTIFACT_PATH,
                                                REFRESH_ARTIFACT_PATH,
                                                champion_history,
                                                delete_alias,
                                                delete_version,
                                                download_model,
                                                local_artifact,
                                                model_version,
                                                model_versions,
                                                register_search_model,
                                                set_alias,
                                                set_champion_history,
                                                set_version_tags,
)
from papersim.lifecycle.tracking.runs import (
                                                EXPERIMENT,
                                                FLOW_TAG,
                                                MAX_TAG_CHARS,
                                                PARENT_RUN_ENV,
                                                RUN_TAGS_ENV,
                                                check_store,
                                                end_orphaned_runs,
                                                FlowRun,
                                                StageRun,
                                                flatten,
                                                flow_metric_history,
                                                flow_run,
                                                numeric_metrics,
                                                run_status,
                                                stage_run,
                                                tracking_uri,
)

__all__ = ["HISTORY_TAG", "MODEL_ARTIFACT_PATH", "REFRESH_ARTIFACT_PATH", "champion_history", "delete_alias",
           "delete_version", "download_model", "local_artifact", "model_version",
           "model_versions", "register_search_model", "set_alias", "set_champion_history", "set_version_tags",
           "EXPERIMENT", "FLOW_TAG", "MAX_TAG_CHARS", "PARENT_RUN_ENV", "RUN_TAGS_ENV", "check_store",
           "end_orphaned_runs", "FlowRun", "StageRun",
           "flatten", "flow_metric_history", "flow_run", "numeric_metrics", "run_status", "stage_run",
           "tracking_uri"]
