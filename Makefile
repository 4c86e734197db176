# twinpipe — the commands a user and CI run. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_PACKAGES := mosquitto mosquitto-clients influxdb socat prometheus openssl
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
COMPOSE ?= docker compose

.DEFAULT_GOAL := help
.PHONY: help up up-serial down logs watch test bench lint format demo check-config compose-config system-deps venv clean grafana-schema

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

.env: .env.example
	@test -f .env || { cp .env.example .env; \
	  sed -i "s/^INFLUXDB_TOKEN=.*/INFLUXDB_TOKEN=$$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')/; \
	          s/^INFLUXDB_ADMIN_PASSWORD=.*/INFLUXDB_ADMIN_PASSWORD=$$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')/; \
	          s/^GRAFANA_ADMIN_PASSWORD=.*/GRAFANA_ADMIN_PASSWORD=$$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')/; \
	          s/^MQTT_PASSWORD=.*/MQTT_PASSWORD=$$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')/" .env; \
	  echo "created .env with fresh random secrets"; }

up: .env ## start Mosquitto, Kafka, InfluxDB, every stage, Prometheus and Grafana with docker compose
	$(COMPOSE) up -d --build
	@echo "running: Grafana on http://localhost:$${GRAFANA_PORT:-3000} (user and password in .env);"
	@echo "'make logs' follows the stages, 'make down' stops everything"

up-serial: .env ## like up, with the real board at SERIAL_DEVICE (.env) instead of the simulator
	$(COMPOSE) -f docker-compose.yml -f docker-compose.serial.yml up -d --build

watch: ## show the live stream of the compose stack (Ctrl-C stops)
	$(COMPOSE) --profile tools run --rm consumer_display

down: ## stop the compose stack (data volumes are kept)
	$(COMPOSE) down

logs: ## follow the logs of the compose stack
	$(COMPOSE) logs -f --tail=50

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,confluent]'
	touch $@

venv: $(VENV)/.installed ## create .venv with twinpipe and its test tools

system-deps: ## install the servers the tests and the demo run (Debian/Ubuntu)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi

# Grafana's dashboard JSON schema, generated from the npm package @grafana/schema (pinned in
# tests/grafana_schema/package-lock.json) to validate grafana/dashboards/*.json.
GRAFANA_SCHEMA := build/grafana-dashboard.schema.json
SCHEMA_TOOLS   := tests/grafana_schema
$(GRAFANA_SCHEMA): $(SCHEMA_TOOLS)/package-lock.json
	cd $(SCHEMA_TOOLS) && npm ci --silent --no-audit --no-fund
	mkdir -p $(dir $@)
	$(SCHEMA_TOOLS)/node_modules/.bin/ts-json-schema-generator --no-type-check --additional-properties \
	  --path $(SCHEMA_TOOLS)/node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts \
	  --type Dashboard -o $@

grafana-schema: $(GRAFANA_SCHEMA) ## generate Grafana's dashboard schema (needs node and npm)

test: system-deps venv $(GRAFANA_SCHEMA) ## install what is needed, then lint and run every test on real servers
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: system-deps venv ## run the benchmarks with their baselines (minutes; not in make test)
	@dpkg -s kcat >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq kcat >/dev/null; }
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: venv ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: system-deps venv ## run the pipeline as local processes on local servers, show the stream (Ctrl-C stops)
	$(BIN)/python -m devstack.demo

check-config: venv ## validate config.yaml (with TWINPIPE__ environment overrides)
	$(BIN)/python -m twinpipe check-config config.yaml

compose-config: venv .env ## validate docker-compose.yml without a Docker engine
	$(BIN)/python -m devstack.compose config --quiet

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build $(SCHEMA_TOOLS)/node_modules
