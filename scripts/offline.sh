# Sourced by the run and test scripts: no network use, no telemetry (same list as papersim.env).
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_LOGGING_TO_API_ENABLED=false
export DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=false
# Prefect: the ephemeral local server keeps its database in the repository (not in the home folder);
# its cold start takes 12-26 s on 2 cores, close to the 20 s default timeout.
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-90}"
