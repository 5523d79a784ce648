# make run | test | reliability | bench | bench-speed | demo | worker | clean   (each sets up .venv first, see scripts/setup.sh)
BIN      := .venv/bin
CHROMIUM ?= /usr/bin/chromium
QUEUES   ?= cpu
BENCH_MB ?= 20
CORPUS   := bench/data/corpus-$(BENCH_MB)mb.txt

.PHONY: setup run test chromium reliability bench bench-speed demo worker clean
.DELETE_ON_ERROR:

setup:
	@bash scripts/setup.sh

run: setup
	$(BIN)/adapt-distill up

worker: setup
	$(BIN)/adapt-distill worker --queues $(QUEUES)

test: setup chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# docs/reliability.md: the failures the service is tried against and how the last run went.
reliability: setup chromium
	$(BIN)/python scripts/reliability_report.py $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium through Playwright.
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "hint: browser tests need $(CHROMIUM); run 'sudo apt-get install chromium'"; \
	  fi; \
	fi

bench: setup $(CORPUS)
	$(BIN)/python bench/vocab_curve.py $(CORPUS)

# Latency and throughput of the paper's shapes (random 12L-768H vs 6L-384H) and the bundled model.
bench-speed: setup
	$(BIN)/python bench/speed.py

# A sample corpus and task from the installed packages' docstrings, and a tiny experiment on them.
demo: setup
	$(BIN)/adapt-distill demo

$(CORPUS): | setup
	@mkdir -p $(@D)
	$(BIN)/python bench/make_corpus.py $@ --mb $(BENCH_MB)

clean:
	rm -rf build dist *.egg-info .pytest_cache bench/data
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +

# docs/screenshots/: every dashboard page at each of its states (a fresh data folder, tiny models, a real
# worker and Chromium; a few minutes on a CPU). SCREENSHOTS_ARGS="--only runs --keep-home", say.
.PHONY: screenshots
screenshots: setup chromium
	$(BIN)/python scripts/screenshots.py $(SCREENSHOTS_ARGS)
