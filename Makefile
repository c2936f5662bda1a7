# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test install migrate bootstrap bench screenshots constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list or the tested versions changed; constraints.txt
# pins every package to the version CI tested.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Random keys, written once and kept, so stored secrets stay readable across restarts;
# the environment overrides them (see README, "Configuration").
.env.local: | $(STAMP)
	$(BIN)/python manage.py generate_keys

migrate: install .env.local
	$(BIN)/python manage.py migrate --no-input

bootstrap: migrate
	$(BIN)/python manage.py bootstrap

# The web server and a task worker together; Ctrl-C stops both (manage.py serve sends each
# one SIGTERM, once: a shell trap's `kill 0` re-signalled django-q2 until it crashed).
run: bootstrap
	$(BIN)/python manage.py collectstatic --no-input --verbosity 0
	@echo "Serving on http://$(HOST):$(PORT)/ — admin at /admin/, LINE webhook at /line/webhook/"
	@$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

test: bootstrap
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Refreshes docs/screenshots/ from the browser tests.
screenshots: install
	SCREENSHOTS_DIR=docs/screenshots $(BIN)/python -m pytest tests/test_browser.py tests/test_browser_setup.py tests/test_browser_console.py tests/test_browser_conversation.py tests/test_simulator_browser.py -q

bench: install .env.local
	$(BIN)/python bench/webhook.py
	$(BIN)/python bench/webhook.py --postgres-redis
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/burst.py
	$(BIN)/python bench/admin_pages.py --database sqlite
	$(BIN)/python bench/admin_pages.py --database postgres
	$(BIN)/python bench/compliance.py
	$(BIN)/python bench/pii_masking.py
	$(BIN)/python bench/memory.py

# Records the installed versions as the tested ones. After changing pyproject.toml:
# `$(BIN)/python -m pip install -U -e '.[test]'`, `make test`, then this.
constraints:
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-wal db.sqlite3-shm staticfiles
