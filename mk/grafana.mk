# The Grafana dashboard schema check (tests/chart/test_dashboard_schema.py):
# pinned @grafana/schema + typescript from tests/chart/grafana_schema's lock file.
#   make grafana-schema-deps   npm ci there, only when node_modules is missing
#                              or older than package.json / package-lock.json

GRAFANA_SCHEMA_DIR := tests/chart/grafana_schema

TEST_DEPS += grafana-schema-deps
# TEST_DEPS is expanded when the root Makefile reads the `test` rule (before
# this fragment), so name the prerequisite here as well.
test test-fast: grafana-schema-deps

.PHONY: grafana-schema-deps grafana-schema-tools

grafana-schema-deps: grafana-schema-tools $(GRAFANA_SCHEMA_DIR)/node_modules

# tsc's launcher is a node script, so node is needed at test time too.
grafana-schema-tools:
	@for t in node npm; do \
		command -v $$t >/dev/null || { echo "error: '$$t' is not installed; the dashboard schema check (tests/chart/test_dashboard_schema.py) needs Node.js 20+ with npm (https://nodejs.org, or apt-get install nodejs npm)" >&2; exit 1; }; \
	done

$(GRAFANA_SCHEMA_DIR)/node_modules: $(GRAFANA_SCHEMA_DIR)/package-lock.json $(GRAFANA_SCHEMA_DIR)/package.json | grafana-schema-tools
	@echo "==> installing the pinned @grafana/schema and typescript (npm ci in $(GRAFANA_SCHEMA_DIR))"
	cd $(GRAFANA_SCHEMA_DIR) && npm ci --no-audit --no-fund
	@touch $@
