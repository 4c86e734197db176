# One image for every twinpipe stage; the command picks the stage:
#   docker run --rm --device=/dev/ttyACM0 -v $PWD/config.yaml:/etc/twinpipe/config.yaml:ro twinpipe:0.1.0 python -m publisher
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The label lets `make up` prune this project's untagged images (older builds) and nothing else.
LABEL org.opencontainers.image.title=twinpipe
WORKDIR /src
RUN python -m venv /opt/twinpipe
COPY pyproject.toml README.md image-constraints.txt ./
COPY twinpipe twinpipe
COPY publisher publisher
COPY mqtt_kafka_bridge mqtt_kafka_bridge
COPY consumer_display consumer_display
COPY influx_ingestion influx_ingestion
COPY latency_probe latency_probe
COPY sensorthings_api sensorthings_api
COPY twin_state twin_state
COPY alerting alerting
COPY predictive_analysis predictive_analysis
# Versions pinned by image-constraints.txt (pyproject.toml only gives ranges).
RUN /opt/twinpipe/bin/pip install --no-cache-dir --disable-pip-version-check \
        --constraint image-constraints.txt '.[confluent]'

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title=twinpipe
# dialout: the group that owns USB serial devices (/dev/ttyACM*, /dev/ttyUSB*) on Debian/Ubuntu hosts.
# The volumes' mount points exist owned by the stages' user, so a fresh named volume (which copies
# them) is writable by it: the publisher's spool, and the twin-dashboard service's output, which
# Grafana (another uid) reads, hence 0755.
RUN test "$(getent group dialout | cut -d: -f3)" = 20 \
    && useradd --system --uid 10001 --gid dialout --no-create-home --shell /usr/sbin/nologin twinpipe \
    && install -d -o twinpipe -g dialout -m 0750 /var/lib/twinpipe/spool \
    && install -d -o twinpipe -g dialout -m 0755 /var/lib/twinpipe/twin
COPY --from=build /opt/twinpipe /opt/twinpipe
COPY config.yaml /etc/twinpipe/config.yaml
ENV PATH=/opt/twinpipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TWINPIPE_CONFIG=/etc/twinpipe/config.yaml
USER twinpipe
WORKDIR /tmp
EXPOSE 8080
CMD ["python", "-m", "publisher", "--help"]
