# Known vulnerabilities in the images' pinned dependencies.
#   make audit   pip-audit (pinned, in a venv of its own) over requirements-image*.txt
# It needs the vulnerability database (PyPI's JSON API) and says plainly when
# that is unreachable or does not know some pinned versions (scripts/audit.py);
# AUDIT_STRICT=1 makes an incomplete audit fail.

PIP_AUDIT_VERSION := 2.10.1
AUDIT_VENV := .venv-audit

.PHONY: audit

$(AUDIT_VENV)/.pip-audit-$(PIP_AUDIT_VERSION):
	@echo "==> installing pip-audit $(PIP_AUDIT_VERSION) into $(AUDIT_VENV) (apart from the project's venv)"
	@$(PYTHON) -m venv $(AUDIT_VENV)
	@$(AUDIT_VENV)/bin/python -m pip install --quiet pip-audit==$(PIP_AUDIT_VERSION)
	@touch $@

audit: $(AUDIT_VENV)/.pip-audit-$(PIP_AUDIT_VERSION)
	@$(AUDIT_VENV)/bin/python scripts/audit.py --pip-audit $(AUDIT_VENV)/bin/pip-audit \
		requirements-image.txt requirements-image-build.txt
