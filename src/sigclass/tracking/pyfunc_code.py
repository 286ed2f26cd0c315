"""MLflow "models from code" entry point: copied into every logged sigclass model."""

from mlflow.models import set_model

from sigclass.tracking.pyfunc import SigclassPyfunc

set_model(SigclassPyfunc())
