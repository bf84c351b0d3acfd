#!/bin/sh
# Writes the basic-auth config from the environment (MLflow reads admin credentials only from this file),
# then serves tracking + registry with artifacts proxied to MinIO.
set -eu
cat > /tmp/basic_auth.ini <<INI
[mlflow]
default_permission = READ
database_uri = postgresql://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/mlflow_auth
admin_username = ${MLFLOW_ADMIN_USER}
admin_password = ${MLFLOW_ADMIN_PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH=/tmp/basic_auth.ini
exec mlflow server --app-name basic-auth --host 0.0.0.0 --port 5000 --workers 2 \
  --backend-store-uri "postgresql://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/mlflow" \
  --artifacts-destination s3://genbench-artifacts/mlflow
