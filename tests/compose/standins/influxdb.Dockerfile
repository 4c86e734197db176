# TEST STAND-IN for influxdb:2.7.x, used only by tests/compose (nothing can be pulled in CI): Debian's
# influxd 1.6 behind the repository's InfluxDB 2 shim (devstack/influx.py: /api/v2/write with token,
# org and bucket checks, /query, /health) in one container, set up from the same
# DOCKER_INFLUXDB_INIT_* environment, with an `influx ping` for the healthcheck and the upstream
# image's VOLUME lines. Serves the InfluxDB 2 API subset twinpipe uses; no Flux, no UI.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends influxdb >/dev/null \
    && rm -rf /var/lib/apt/lists/*
COPY devstack /opt/standin/devstack
COPY influxdb_standin.py /opt/standin/influxdb_standin.py
COPY influx /usr/local/bin/influx
ENV PYTHONPATH=/opt/standin
VOLUME ["/var/lib/influxdb2", "/etc/influxdb2"]
EXPOSE 8086
CMD ["python3", "/opt/standin/influxdb_standin.py"]
