"""The register stage: MLflow runs and versions, the champion policy and the pyfunc contract."""
