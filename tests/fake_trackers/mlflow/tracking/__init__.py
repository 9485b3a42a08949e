from types import SimpleNamespace

from fake_tracker_record import record


class MlflowClient:
    def __init__(self, tracking_uri=None, registry_uri=None):
        self.tracking_uri = tracking_uri

    def search_experiments(self, max_results=None):
        return []

    def create_run(self, experiment_id, tags=None, run_name=None, **kwargs):
        run_id = f"run-{(tags or {}).get('trial_name', run_name)}"
        record("mlflow", "create_run", run_id=run_id, experiment_id=experiment_id, tags=tags, run_name=run_name)
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, run_uuid=run_id))

    def log_param(self, run_id, key, value):
        pass

    def log_metric(self, run_id, key, value, step=None):
        pass

    def log_artifacts(self, run_id, local_dir, artifact_path=None):
        pass

    def set_terminated(self, run_id, status=None):
        record("mlflow", "set_terminated", run_id=run_id, status=status)
