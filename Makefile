# twinpipe — the commands a user and CI run. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_PACKAGES := mosquitto mosquitto-clients influxdb socat prometheus prometheus-alertmanager openssl
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
COMPOSE ?= docker compose
# make test's pytest workers (pytest-xdist; whole test files per worker): most tests wait on servers.
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help env up up-serial down logs watch test compose-deps bench lint format demo demo-replay dashboard check-config compose-config system-deps venv clean grafana-schema

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

# Compose settings. ENV_FILE, COMPOSE_PROJECT_NAME and COMPOSE_FILE let tests/compose run the same
# targets on a stack of its own without touching a user's .env or `make up` stack.
ENV_FILE ?= .env
DOCKER   ?= docker
COMPOSE_FILES ?=
COMPOSE_CMD = $(COMPOSE) --env-file $(ENV_FILE) $(COMPOSE_FILES)
# Reads and completes $(ENV_FILE) (devstack/env_file.py says how): missing keys, empty secrets, the
# project name compose uses, the secrets' hashes that make compose recreate the services using them.
ENV_TOOL = $(PYTHON) devstack/env_file.py

env: ## create .env from .env.example, or complete it (missing keys, empty secrets)
	@$(ENV_TOOL) complete $(ENV_FILE) .env.example "$(DOCKER)"

up: env ## build the image, start the whole stack and wait until every service is healthy
	@env $$($(ENV_TOOL) hashes $(ENV_FILE)) $(COMPOSE_CMD) up -d --build --wait --wait-timeout $(UP_TIMEOUT_S) || { status=$$?; \
	  $(COMPOSE_CMD) ps -a --format '{{.Service}}|{{.State}}|{{.Health}}|{{.ExitCode}}' | \
	  while IFS='|' read -r service state health code; do \
	    case "$$state/$$health" in running/healthy|running/) continue;; exited/) [ "$$code" = 0 ] && continue;; esac; \
	    detail=$$( [ "$$state" = exited ] && echo ", exit code $$code" || echo "$${health:+, $$health}"); \
	    echo "--- $$service is $$state$$detail; its last log lines:" >&2; \
	    $(COMPOSE_CMD) logs --no-log-prefix --tail=20 $$service >&2; done; \
	  exit $$status; }
	@$(DOCKER) image prune --force --filter label=org.opencontainers.image.title=twinpipe \
	  --filter "label=com.docker.compose.project=$$($(ENV_TOOL) project $(ENV_FILE))" >/dev/null
	@echo "healthy: Grafana on http://$$($(ENV_TOOL) get $(ENV_FILE) BIND_ADDRESS 127.0.0.1):$$($(ENV_TOOL) get $(ENV_FILE) GRAFANA_PORT 3000)," \
	  "login in $(ENV_FILE) (after changing a secret there, run make up again: it recreates the services using it)"
	@echo "'make watch' shows the stream, 'make logs' follows the services, 'make down' stops everything"
UP_TIMEOUT_S ?= 300

up-serial: ## like up, with the real board at SERIAL_DEVICE (.env) instead of the simulator
	$(MAKE) up COMPOSE_FILES="-f docker-compose.yml -f docker-compose.serial.yml"

watch: ## show the live stream of the compose stack (Ctrl-C stops; WATCH_ARGS="--count 5" etc.)
	$(COMPOSE_CMD) --profile tools run --rm consumer_display python -m consumer_display $(WATCH_ARGS)

# A recreated container (changed config or secret) inherits its predecessor's anonymous volumes by
# name, and `rm --volumes` removes only those a container created itself: the anonymous volumes
# (64 hex digits) its containers mount are listed first and removed after them.
down: ## stop the compose stack; data volumes are kept, anonymous volumes and containers removed
	@project=$$($(ENV_TOOL) project $(ENV_FILE)); \
	containers=$$($(DOCKER) ps --all --quiet --filter "label=com.docker.compose.project=$$project"); \
	anonymous=$$( [ -z "$$containers" ] || $(DOCKER) inspect --format \
	  '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}' $$containers | tr ' ' '\n' | \
	  grep -E '^[0-9a-f]{64}$$' | sort -u); \
	$(COMPOSE_CMD) --profile tools stop && \
	$(COMPOSE_CMD) --profile tools rm --force --volumes && \
	$(COMPOSE_CMD) --profile tools down --remove-orphans && \
	for volume in $$anonymous; do $(DOCKER) volume rm $$volume >/dev/null 2>&1 || true; done

logs: ## follow the logs of the compose stack
	$(COMPOSE_CMD) logs -f --tail=50

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
# tests/grafana_schema/package-lock.json) to validate grafana/dashboards/*.json and grafana/twin/*.json.
GRAFANA_SCHEMA := build/grafana-dashboard.schema.json
SCHEMA_TOOLS   := tests/grafana_schema
$(GRAFANA_SCHEMA): $(SCHEMA_TOOLS)/package-lock.json
	cd $(SCHEMA_TOOLS) && npm ci --silent --no-audit --no-fund
	mkdir -p $(dir $@)
	$(SCHEMA_TOOLS)/node_modules/.bin/ts-json-schema-generator --no-type-check --additional-properties \
	  --path $(SCHEMA_TOOLS)/node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts \
	  --type Dashboard -o $@

grafana-schema: $(GRAFANA_SCHEMA) ## generate Grafana's dashboard schema (needs node and npm)

# The compose test (tests/compose) needs a Docker engine: one that runs is used as it is; where none
# is installed, Debian's docker.io is (the test starts and stops a dockerd of its own). debootstrap
# makes the local base image the test's stand-in images are built on.
compose-deps: ## install Debian's docker.io (only when no Docker engine is there) and debootstrap
	@missing=""; \
	if ! command -v dockerd >/dev/null 2>&1 && ! $(DOCKER) info >/dev/null 2>&1; then missing=" docker.io"; fi; \
	dpkg -s debootstrap >/dev/null 2>&1 || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi

test: system-deps compose-deps venv $(GRAFANA_SCHEMA) ## install what is needed, then lint and run every test on real servers
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

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

demo: system-deps venv dashboard ## run the pipeline as local processes on local servers, show the stream (Ctrl-C stops)
	$(BIN)/python -m devstack.demo $(if $(REPLAY),--replay $(REPLAY) --speed $(or $(SPEED),3600))

demo-replay: system-deps venv dashboard ## the demo on a real weather year (pvlib TMY3, Greensboro NC) at 3600x; REPLAY=, SPEED= to change
	$(BIN)/python -m devstack.demo --replay $(or $(REPLAY),recordings/greensboro-tmy3.csv) --speed $(or $(SPEED),3600)

# Compose does not need this: its twin-dashboard service writes the dashboard Grafana loads.
dashboard: venv ## write grafana/twin/digital-twin.json from the model in config.yaml (without compose)
	$(BIN)/python -m twinpipe dashboard --config config.yaml

check-config: venv ## validate config.yaml (with TWINPIPE__ environment overrides)
	$(BIN)/python -m twinpipe check-config config.yaml

compose-config: venv env ## validate docker-compose.yml without a Docker engine
	$(BIN)/python -m devstack.compose --env-file $(ENV_FILE) config --quiet

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build $(SCHEMA_TOOLS)/node_modules
