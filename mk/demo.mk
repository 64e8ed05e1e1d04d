# `make demo`: Redis + 3 catalog replicas on loopback and a scripted scenario
# (scripts/demo.py). Leaves the replicas running; `make demo-down` stops them.
# With REDIS_URL set, that Redis is used and no redis-server is needed.
.PHONY: demo demo-down

demo: venv $(if $(REDIS_URL),,redis-server-bin)
	$(BIN)/python scripts/demo.py up

demo-down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python scripts/demo.py down; \
	else python3 scripts/demo.py down; fi
