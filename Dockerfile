# One image for every service (dagster user code, webserver, daemon, API); the command differs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    USDCOP_DATA_DIR=/data/lake \
    USDCOP_MODELS_DIR=/data/models \
    USDCOP_STATE_DIR=/data/state

WORKDIR /opt/usdcop
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY usdcop_platform ./usdcop_platform
COPY usdcop_platform_tests ./usdcop_platform_tests
COPY config ./config
COPY sql ./sql
COPY models/README.md ./models/README.md
COPY workspace.yaml workspace.docker.yaml ./
RUN pip install --no-cache-dir .
RUN mkdir -p "$DAGSTER_HOME" /data/lake /data/models /data/state
# The production instance (PostgreSQL); the repo-root dagster.yaml is the local one and is not copied.
COPY deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml"

EXPOSE 3000 4000 8000
CMD ["usdcop", "--help"]
