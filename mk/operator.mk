# The CacheInvalidationPolicy operator: operator/README.md.
#   make operator-typecheck  mypy on the package alone (make lint checks it with the others)
#   make operator-test    its tests (kmock + kubectl + kopf + Redis + replicas; CRD schema/CEL)
#   make operator-run     run it against the current kubeconfig (REDIS_URL, WATCH_NAMESPACE...)
#   make operator-apply   publish operator/examples/policies.yaml without Kubernetes
#   make operator-crd     install the CRD in the current cluster
#   make operator-crd-sync copy the chart's CRD (the source) into the operator package

OPERATOR_CRD := helm/hybrid-catalog/crds/cacheinvalidationpolicies.yaml
OPERATOR_EXAMPLES := operator/examples/policies.yaml
OPERATOR_CRD_COPY := operator/cache_operator/crd/cacheinvalidationpolicies.yaml
OPERATOR_REDIS_URL ?= $(if $(REDIS_URL),$(REDIS_URL),redis://127.0.0.1:6379/0)

.PHONY: operator-test operator-typecheck operator-run operator-apply operator-crd operator-crd-sync

operator-typecheck: venv
	MYPYPATH=services/hybridcache $(BIN)/mypy --follow-imports=silent operator/cache_operator

operator-test: venv redis-server-bin
	$(BIN)/pytest tests/operator $(PYTEST_ARGS)

operator-run: venv
	REDIS_URL=$(OPERATOR_REDIS_URL) $(BIN)/python -m cache_operator run

operator-apply: venv
	$(BIN)/python -m cache_operator apply -f $(OPERATOR_EXAMPLES) --redis-url $(OPERATOR_REDIS_URL)

operator-crd:
	kubectl apply -f $(OPERATOR_CRD)

# The chart's crds/ file is the one source; the operator ships a byte-identical
# copy as package data (tests/operator/test_crd.py fails when they differ).
operator-crd-sync:
	cp $(OPERATOR_CRD) $(OPERATOR_CRD_COPY)
