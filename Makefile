# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
# Everything else (virtual env, packages, Postgres, S3 server, Airflow) is set up by them.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test test-fast up down status lint format compose-secrets clean

$(BIN)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else \
		"Python 3.11 is needed (found %d.%d): make PYTHON=/path/to/python3.11" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins every package (Airflow's own constraints cannot be downloaded here).
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[local,dev]"
	@touch $@

install: $(BIN)/.installed

## Run the product end to end on embedded defaults.
demo: install
	$(BIN)/catalogue demo

## The whole test suite against real Postgres, S3 and Airflow (started by the tests themselves).
## pytest's exit code 5 (no tests collected, e.g. a -k that matches nothing) is reported and
## is not a failure.
test: install
	@$(BIN)/python -m pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests (exit 5): check PYTEST_ARGS"; exit 0; fi; \
	exit $$code

## Without the slow local-stack test (starts Airflow standalone).
test-fast: install
	$(BIN)/python -m pytest -m "not stack" $(PYTEST_ARGS)

up: install
	$(BIN)/catalogue up
down: install
	$(BIN)/catalogue down
status: install
	$(BIN)/catalogue status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## docker compose reads the Airflow admin password from a secret file; write it from .env.
compose-secrets:
	@test -f .env || { echo "copy .env.example to .env and fill it in first"; exit 1; }
	@mkdir -p .secrets && chmod 700 .secrets
	@. ./.env && printf '{"admin": "%s"}\n' "$$AIRFLOW_ADMIN_PASSWORD" > .secrets/airflow_passwords.json
	@chmod 600 .secrets/airflow_passwords.json && echo "wrote .secrets/airflow_passwords.json"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
