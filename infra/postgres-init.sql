-- One database per service; the POSTGRES_USER owns both.
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
CREATE DATABASE prefect;
