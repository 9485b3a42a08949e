MLFLOW_RUN_NAME = "mlflow.runName"
