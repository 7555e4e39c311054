"""The registered model's code, logged as a file with each version (MLflow's models from code).

MLflow runs this file when it saves and when it loads the model: `set_model` names the model. The
papersim package travels with the model (`code_paths`), so a version loads and answers where
papersim is not installed; its artifacts are the encoder and the index folder. A refresh version holds
its index and a model_ref.json naming its trained version's encoder in the artifact store instead of a
copy: it loads where the tracking store that registered it answers (MLFLOW_TRACKING_URI).
"""

from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


class PapersimSearch(mlflow.pyfunc.PythonModel):
    """DataFrame of requests (query or paper_id, optional k, mode) -> top-k paper_id, title, score."""

    def load_context(self, context):
        from papersim.lifecycle.versions import Version
        from papersim.retrieval.serving import SearchService

        # the model folder as papersim reads a registered version (its encoder, or the one its model_ref names)
        version = Version(Path(context.artifacts["index"]).parent.parent)
        self.service = SearchService.load(version.encoder, version.index)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from papersim.errors import PapersimError

        try:
            return self.service.predict(model_input)
        except PapersimError as exc:  # a bad request: HTTP 400 with the rule that failed
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


set_model(PapersimSearch())
