# The reference deployment on kind (issue 5): images, cluster, chart, monitoring.
#   make kind-up      cluster (if absent) + images + kube-prometheus-stack + chart + policies
#   make kind-smoke   reads/writes across pods, policies in sync, metrics present
#   make kind-down    delete the cluster
# MONITORING=none skips kube-prometheus-stack (and the chart's monitoring objects).

KIND_CLUSTER ?= hybrid-catalog
KIND_NAMESPACE ?= hybrid-catalog
KIND_RELEASE ?= demo
MONITORING ?= kube-prometheus-stack
MONITORING_NAMESPACE ?= monitoring
# kube-prometheus-stack chart, pinned (release of 2026-10-20).
KPS_VERSION ?= 92.11.0
KPS_REPO ?= https://prometheus-community.github.io/helm-charts
CHART_DIR := helm/hybrid-catalog
APP_VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' $(CHART_DIR)/Chart.yaml)
# The chart's values name exactly these (tests/chart checks it).
CATALOG_IMAGE := hybrid-catalog/catalog:$(APP_VERSION)
OPERATOR_IMAGE := hybrid-catalog/operator:$(APP_VERSION)
GRAFANA_URL := http://localhost:3000
CATALOG_URL := http://localhost:8080
# A helm on PATH wins; otherwise the pinned one `make helm-bin` puts in .venv/bin.
HELM ?= $(shell command -v helm 2>/dev/null || echo $(BIN)/helm)

TEST_DEPS += helm-bin promtool-bin
# TEST_DEPS is expanded when the root Makefile reads the `test` rule (before
# this fragment), so name the prerequisites here as well.
test: helm-bin promtool-bin

.PHONY: helm-bin promtool-bin kind-tools kind-up kind-down kind-smoke kind-images kind-print-images

helm-bin: venv
	@$(BIN)/python scripts/kind-fetch-helm.py --dest $(BIN)

promtool-bin:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
		echo "==> promtool/prometheus not found; installing Debian's prometheus package"; \
		command -v apt-get >/dev/null || { echo "install Prometheus (promtool + prometheus) and retry" >&2; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# Fails early, naming the missing tool and where to get it.
kind-tools:
	@for t in docker kind kubectl; do \
		command -v $$t >/dev/null || { echo "error: '$$t' is not installed (needed by make kind-up; see docs/deployment.md)" >&2; exit 1; }; \
	done
	@docker info >/dev/null 2>&1 || { echo "error: docker is installed but its daemon is not reachable (is it running?)" >&2; exit 1; }
	@test -x "$(HELM)" || command -v "$(HELM)" >/dev/null || $(MAKE) --no-print-directory helm-bin
	@echo "==> tools: $$(docker --version | head -1); kind $$(kind version | cut -d' ' -f2); helm $$($(HELM) version --short)"

kind-print-images:
	@echo $(CATALOG_IMAGE)
	@echo $(OPERATOR_IMAGE)

kind-images:
	@echo "==> building $(CATALOG_IMAGE) and $(OPERATOR_IMAGE) (Dockerfile targets catalog, operator)"
	docker build --target catalog -t $(CATALOG_IMAGE) .
	docker build --target operator -t $(OPERATOR_IMAGE) .

kind-up: kind-tools
	@if kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
		echo "==> kind cluster '$(KIND_CLUSTER)' exists; reusing it"; \
	else \
		echo "==> creating kind cluster '$(KIND_CLUSTER)' (1 control plane, 2 workers; kind-config.yaml)"; \
		kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml --wait 120s; \
	fi
	@kubectl config use-context kind-$(KIND_CLUSTER) >/dev/null
	@$(MAKE) --no-print-directory kind-images
	@echo "==> loading the images into the kind nodes"
	kind load docker-image --name $(KIND_CLUSTER) $(CATALOG_IMAGE) $(OPERATOR_IMAGE)
ifeq ($(MONITORING),none)
	@echo "==> MONITORING=none: skipping kube-prometheus-stack"
else
	@echo "==> installing kube-prometheus-stack $(KPS_VERSION) into '$(MONITORING_NAMESPACE)' (Prometheus, Grafana, operator CRDs)"
	$(HELM) upgrade --install kps kube-prometheus-stack --repo $(KPS_REPO) --version $(KPS_VERSION) \
		--namespace $(MONITORING_NAMESPACE) --create-namespace \
		-f helm/kube-prometheus-stack-values.yaml --wait --timeout 10m
endif
	@echo "==> installing the hybrid-catalog chart as release '$(KIND_RELEASE)' in '$(KIND_NAMESPACE)'"
	$(HELM) upgrade --install $(KIND_RELEASE) $(CHART_DIR) \
		--namespace $(KIND_NAMESPACE) --create-namespace \
		-f $(CHART_DIR)/ci/kind-values.yaml \
		$(if $(filter none,$(MONITORING)),--set monitoring.serviceMonitor.enabled=false --set monitoring.prometheusRule.enabled=false --set monitoring.dashboards.enabled=false) \
		--wait --timeout 10m
	@if ls operator/examples/*.yaml >/dev/null 2>&1; then \
		echo "==> applying the example policies (operator/examples/)"; \
		kubectl -n $(KIND_NAMESPACE) apply -f operator/examples/; \
	fi
	@echo "==> waiting for the rollouts"
	kubectl -n $(KIND_NAMESPACE) rollout status deployment/$(KIND_RELEASE)-hybrid-catalog-catalog --timeout 5m
	kubectl -n $(KIND_NAMESPACE) rollout status deployment/$(KIND_RELEASE)-hybrid-catalog-operator --timeout 5m
	@kubectl -n $(KIND_NAMESPACE) get pods -o wide
	@kubectl -n $(KIND_NAMESPACE) get cip
	@echo
	@echo "Catalog:    $(CATALOG_URL)   (try: curl -si $(CATALOG_URL)/products/1)"
ifneq ($(MONITORING),none)
	@echo "Grafana:    $(GRAFANA_URL)   (login admin / hybrid-catalog; folder General, dashboards 'Hybrid catalog / ...')"
	@echo "Prometheus: http://localhost:9090"
endif
	@echo "Policies:   kubectl -n $(KIND_NAMESPACE) get cip -w"
	@echo "Smoke test: make kind-smoke      Tear down: make kind-down"

kind-smoke: venv
	@command -v kubectl >/dev/null || { echo "error: 'kubectl' is not installed" >&2; exit 1; }
	$(BIN)/python scripts/kind-smoke.py --namespace $(KIND_NAMESPACE) --release $(KIND_RELEASE) --url $(CATALOG_URL)

kind-down:
	@command -v kind >/dev/null || { echo "error: 'kind' is not installed" >&2; exit 1; }
	@echo "==> deleting kind cluster '$(KIND_CLUSTER)'"
	kind delete cluster --name $(KIND_CLUSTER)
