#!/bin/sh
# TEST STAND-IN: what eclipse-mosquitto's /docker-entrypoint.sh does: as root, hand /mosquitto to the
# broker's user (read-only mounts stay as they are), then run the command.
set -e
if [ "$(id -u)" = 0 ]; then
    chown -R mosquitto:mosquitto /mosquitto 2>/dev/null || true
fi
exec "$@"
