#!/bin/sh
# Writes the basic-auth config (mode 0600) from the environment, then serves tracking + registry with
# artifacts proxied to MinIO. The admin account comes from MLFLOW_AUTH_ADMIN_USERNAME / _PASSWORD (compose
# sets them from infra/.env); MLflow reads them only when it first creates the admin in mlflow_auth.
set -eu
umask 077
cat > /tmp/basic_auth.ini <<INI
[mlflow]
# other users may read every experiment and model (a team server: results are for sharing); writes need a grant
default_permission = READ
database_uri = postgresql://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/mlflow_auth
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH=/tmp/basic_auth.ini
# the store URI holds the Postgres password: in the environment, not on a command line every process can read
export MLFLOW_BACKEND_STORE_URI="postgresql://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/mlflow"
exec mlflow server --app-name basic-auth --host 0.0.0.0 --port 5000 --workers 2 \
  --artifacts-destination s3://genbench-artifacts/mlflow
