"""The MLflow "model from code" entry: MLflow executes this file when it loads the model.

Library code never imports it; `medimg.registry.publish` hands its path to `log_model`.
"""

from mlflow.models import set_model

from medimg.serving.pyfunc import ClassifierModel

set_model(ClassifierModel())
