# The images, built and run: scripts/image-test.py.
#   make image-test   start Docker Engine if needed, build both Dockerfile targets
#                     (against a local stand-in base when no registry is reachable),
#                     run them as the chart does against a private Redis and database
#   make image-lock   regenerate requirements-image*.txt (pinned, with hashes)
# `make test` runs the image test too, and skips it with the reason printed when
# Docker cannot run on the machine (IMAGE_TEST=0 skips it outright).

IMAGE_TEST ?= 1

.PHONY: image-test image-test-if-possible docker-engine-bin image-lock

# Debian's Docker Engine and debootstrap (for the stand-in base), like the
# other tools `make test` installs; nothing to do where docker already is.
docker-engine-bin:
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null || { \
		command -v apt-get >/dev/null || { echo "note: no apt-get; install Docker Engine to run the image test"; exit 0; }; \
		echo "==> installing Debian's docker.io and debootstrap with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null \
			|| echo "note: could not install docker.io; the image test will say why it is skipped"; }

image-test: venv redis-server-bin docker-engine-bin
	$(BIN)/python scripts/image-test.py

image-test-if-possible: venv redis-server-bin docker-engine-bin
ifeq ($(IMAGE_TEST),0)
	@echo "SKIPPED image test: IMAGE_TEST=0"
else
	$(BIN)/python scripts/image-test.py --skip-if-unavailable
endif

# Runs before `make test`'s pytest (a prerequisite of `test`).
test: image-test-if-possible

image-lock: venv
	$(BIN)/python scripts/image-lock.py
