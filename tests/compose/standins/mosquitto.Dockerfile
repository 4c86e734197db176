# TEST STAND-IN for eclipse-mosquitto:2.0.x, used only by tests/compose (nothing can be pulled in CI):
# Debian 12's Mosquitto 2.0.11 laid out like the upstream image (its paths, entrypoint, command and
# VOLUME lines), so the project's compose service runs on it unchanged.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        mosquitto mosquitto-clients >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o mosquitto -g mosquitto /mosquitto/config /mosquitto/data /mosquitto/log
COPY mosquitto-entrypoint.sh /docker-entrypoint.sh
VOLUME ["/mosquitto/data", "/mosquitto/log"]
EXPOSE 1883
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
