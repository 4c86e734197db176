# TEST STAND-IN for prom/alertmanager:v0.27.0, used only by tests/compose (nothing can be pulled in CI):
# Debian 12's prometheus-alertmanager 0.25 with the upstream image's entrypoint, user, working dir
# and VOLUME line (wget for the healthcheck, as the upstream busybox has).
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager wget >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o nobody -g nogroup /alertmanager
USER nobody
VOLUME ["/alertmanager"]
WORKDIR /alertmanager
EXPOSE 9093
ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
