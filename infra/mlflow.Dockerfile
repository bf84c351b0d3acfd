# MLflow tracking server with the Postgres driver and S3 client it needs.
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" "psycopg2-binary>=2.9" "boto3>=1.35"
USER nobody
ENTRYPOINT ["/bin/sh", "/opt/mlflow-entrypoint.sh"]
