# TEST STAND-IN for the `python:3.11.x-slim-bookworm` base of the project's Dockerfile, used only by
# tests/compose where nothing can be pulled: Debian 12's own Python 3.11 on a debootstrap base.
# Built with `--build-arg PYTHON_IMAGE=<this>`; the project's Dockerfile itself is not changed.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
# The build host's CA bundle: pip inside the image goes through the same TLS path as the host's.
COPY ca-certificates.crt /etc/ssl/certs/build-host-ca-bundle.crt
ENV PIP_CERT=/etc/ssl/certs/build-host-ca-bundle.crt
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3 python3-venv python-is-python3 >/dev/null \
    && rm -rf /var/lib/apt/lists/*
