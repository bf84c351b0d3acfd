"""The drivers built from the stage declarations: the Prefect flow, the Kubeflow pipeline, dvc.yaml."""
