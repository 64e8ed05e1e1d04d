# `make demo`: Redis + 3 catalog replicas on loopback and a scripted scenario
# (scripts/demo.py). Leaves the replicas running; `make demo-down` stops them.
# With REDIS_URL set, that Redis is used and no redis-server is needed. Each run
# makes a fresh write token (.demo/write-token) that the replicas require.
.PHONY: demo demo-down

demo: venv $(if $(REDIS_URL),,redis-server-bin)
	$(BIN)/python scripts/demo.py up

demo-down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python scripts/demo.py down; \
	else python3 scripts/demo.py down; fi

# wrk, the load generator bench/bench_catalog_http.py prefers (it falls back to a
# Python client without it). A no-op when wrk is installed.
.PHONY: wrk-bin
wrk-bin:
	@command -v wrk >/dev/null || { \
		command -v apt-get >/dev/null || { echo "wrk not found (optional): e.g. 'brew install wrk'"; exit 0; }; \
		echo "==> installing wrk with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
