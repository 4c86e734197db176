#!/bin/sh
# TEST STAND-IN for Kafka's bin/kafka-broker-api-versions.sh: asks the broker for its API versions.
exec python3 /opt/kafka/standin.py api-versions "$@"
