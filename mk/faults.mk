# The fault suite (tests/faults, marked slow) needs ip/tc (iproute2) for a
# replica in its own network namespace and libfaketime (Debian's faketime)
# for skewed clocks. Installed with apt-get
# when missing; without apt-get the tests that need them skip, saying why.
.PHONY: fault-tools

TEST_DEPS += fault-tools
# TEST_DEPS is expanded when the root Makefile reads the `test` rule (before
# this fragment), so name the prerequisite here as well.
test: fault-tools

fault-tools:
	@missing=""; \
	command -v ip >/dev/null && command -v tc >/dev/null || missing="$$missing iproute2"; \
	ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || missing="$$missing faketime"; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null; then \
			echo "==> installing$$missing with apt-get (tests/faults)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else echo "tests/faults will skip what needs:$$missing (no apt-get)"; fi; \
	fi
