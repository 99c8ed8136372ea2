# One image for every service; the command chooses the service (deploy/k8s runs each of these):
#   python -m order_service | python -m callback_service | python -m execution_service | python -m exchange_simulator
#   python -m brokerage.storage.migrate | python -m brokerage.messaging.setup | python -m brokerage.reconcile
# Build: docker build -t brokerage:dev .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/brokerage
# .dockerignore keeps tests, benchmarks, deploy/ and local state out; the packages are those pyproject.toml names.
COPY . .
RUN /opt/brokerage/bin/pip install --no-cache-dir . \
    && /opt/brokerage/bin/python -m compileall -q /opt/brokerage/lib

FROM ${PYTHON_IMAGE}
# The root filesystem is read-only in Kubernetes: bytecode is compiled above, and nothing writes outside /tmp.
ENV PATH=/opt/brokerage/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin brokerage
COPY --from=build /opt/brokerage /opt/brokerage
USER 10001:10001
# gRPC and Prometheus ports of the brokerage services (the exchange simulator uses 50060 and 9470).
EXPOSE 50051 9464
# Python runs as PID 1: the services install their own SIGTERM handler (drain, then exit), so no init is needed.
CMD ["python", "-m", "order_service"]
