-- docker-compose: separate databases for the Dagster instance and MLflow beside the application DB.
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
