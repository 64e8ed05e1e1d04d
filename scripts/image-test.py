"""Build both images and run them as the chart does (`make image-test`).

Why: the chart's tests check manifests, not images; only running an image
shows that it starts read-only as uid 10001 with every capability dropped,
reaches Redis and PostgreSQL, and that its HEALTHCHECK works.

Steps: a Docker daemon (started here if none runs and `dockerd` exists; stopped
again at the end), a base image (PYTHON_IMAGE, else the official one if it can
be pulled, else a local stand-in built once from Debian packages with
debootstrap and kept), both Dockerfile targets, then against a private
redis-server and a private database in the local PostgreSQL: the catalog's
`seed`, `serve` (checks /readyz, a product read, Docker's health status) and
the operator's `apply`. Everything started is removed again.

With --skip-if-unavailable (what `make test` uses) a machine that cannot run
Docker prints the reason and exits 0; otherwise that is an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_BASE = "python:3.11.14-slim-bookworm"
STANDIN_BASE = "hybrid-catalog/python-standin:3.11-bookworm"
PREFIX = "hybrid-catalog-image-test"
# The chart's container securityContext, as docker run flags.
AS_THE_CHART_RUNS = ["--read-only", "--user", "10001:10001", "--cap-drop", "ALL",
                     "--security-opt", "no-new-privileges", "--tmpfs", "/tmp:size=64m",
                     "--network", "host"]
POSTGRES = os.environ.get("IMAGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


class Unavailable(Exception):
    """Docker cannot run here; the message says why."""


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


def run(*args: str, check: bool = True, timeout: float = 900,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> None:
    """Poll `ready` (an external process gives no event to await)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Docker:
    """The docker CLI, with BuildKit: the buildx plugin when installed, else a
    client old enough to carry BuildKit itself (Debian's docker.io)."""

    def __init__(self) -> None:
        self.env = dict(os.environ, DOCKER_BUILDKIT="1")
        self.cli = self._pick_cli()

    def _pick_cli(self) -> str:
        found = (shutil.which("docker"), "/usr/bin/docker")
        candidates = [c for c in found if c and Path(c).exists()]
        if not candidates:
            raise Unavailable("no docker CLI (apt-get install docker.io, or Docker Engine)")
        for cli in dict.fromkeys(candidates):
            if run(cli, "buildx", "version", check=False).returncode == 0:
                return cli
            version = run(cli, "version", "--format", "{{.Client.Version}}", check=False).stdout
            if version.strip() and int(version.split(".")[0]) < 23:
                return cli  # BuildKit built into the client
        raise Unavailable(f"no docker CLI here can build with BuildKit ({', '.join(candidates)}); "
                          "install the buildx plugin")

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run(self.cli, *args, check=check, timeout=timeout, env=self.env)

    def alive(self) -> bool:
        return self("info", check=False, timeout=30).returncode == 0


@contextlib.contextmanager
def docker_daemon(docker: Docker, workdir: Path) -> Iterator[None]:
    """Use the running daemon, else start one (and stop it again)."""
    if docker.alive():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise Unavailable("the Docker daemon is not running and cannot be started here "
                          "(needs dockerd and root)")
    log("starting dockerd (no bridge/iptables: containers use the host network)")
    logfile = (workdir / "dockerd.log").open("w")
    proc = subprocess.Popen([dockerd, "--iptables=false", "--bridge=none"],
                            stdout=logfile, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for("dockerd", lambda: proc.poll() is None and docker.alive(), 60)
        except SystemExit as exc:
            tail = (workdir / "dockerd.log").read_text()[-800:]
            raise Unavailable(f"dockerd did not start: {tail}") from exc
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        logfile.close()


def standin_base(docker: Docker, workdir: Path) -> str:
    """A Debian bookworm + Python 3.11 image with python/pip on PATH, like the
    official one; built once (debootstrap), then kept in Docker's image store."""
    if docker("image", "inspect", STANDIN_BASE, check=False).returncode == 0:
        return STANDIN_BASE
    if shutil.which("debootstrap") is None:
        raise SystemExit("no registry reachable and debootstrap is missing "
                         "(apt-get install debootstrap), so no base image can be built")
    rootfs = workdir / "rootfs"
    log(f"building the stand-in base {STANDIN_BASE} (debootstrap bookworm; once)")
    run("debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
        "bookworm", str(rootfs), "http://deb.debian.org/debian", timeout=1800)
    run("chroot", str(rootfs), "python3", "-m", "venv", "/opt/python")
    # The machine's CA bundle: pip in the build must trust what the host trusts.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(rootfs / cache, ignore_errors=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    path = "/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    subprocess.run([docker.cli, "import", "--change", f"ENV PATH={path}",
                    "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]',
                    "-", STANDIN_BASE], stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    return STANDIN_BASE


def base_image(docker: Docker, workdir: Path) -> str:
    wanted = os.environ.get("PYTHON_IMAGE")
    if wanted:
        return wanted
    if docker("image", "inspect", OFFICIAL_BASE, check=False).returncode == 0:
        return OFFICIAL_BASE
    if docker("pull", OFFICIAL_BASE, check=False, timeout=120).returncode == 0:
        return OFFICIAL_BASE
    log(f"{OFFICIAL_BASE} cannot be pulled (no registry reachable): using a local stand-in")
    return standin_base(docker, workdir)


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL)
    try:
        def up() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
            return False
        wait_for("redis-server", up, 30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def database() -> Iterator[str]:
    name = f"hc_image_test_{uuid.uuid4().hex[:8]}"
    run("psql", POSTGRES + "/postgres", "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://{POSTGRES.split('://', 1)[1]}/{name}"
    finally:
        run("psql", POSTGRES + "/postgres", "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            check=False)


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def check_catalog(docker: Docker, image: str, redis_url: str, database_url: str) -> None:
    env = ["-e", f"DATABASE_URL={database_url}", "-e", f"REDIS_URL={redis_url}",
           "-e", "CACHE_KEY_PREFIX=image-test:", "-e", "NODE_NAME=image-test-0"]
    log("catalog: seed (as the chart's seed Job)")
    docker("run", "--rm", *AS_THE_CHART_RUNS, *env, image,
           "python", "-m", "catalog", "seed", "--products", "20", timeout=300)
    port = free_port()
    name = f"{PREFIX}-catalog-{port}"
    log(f"catalog: serve on 127.0.0.1:{port}, read-only, uid 10001, no capabilities")
    docker("run", "-d", "--name", name, *AS_THE_CHART_RUNS, *env,
           "-e", f"CATALOG_PORT={port}", "--health-interval", "1s", "--health-start-period", "30s",
           image, "python", "-m", "catalog", "serve", "--host", "127.0.0.1", "--port", str(port))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for("/readyz", lambda: http_get(base + "/readyz")[0] == 200, 90)
        status, body = http_get(base + "/products/1")
        if status != 200 or json.loads(body).get("id") != 1:
            raise SystemExit(f"GET /products/1 gave {status}: {body[:300]!r}")
        log("catalog: /readyz 200, GET /products/1 200")

        def healthy() -> bool:
            state = docker("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()
            if state == "unhealthy":
                raise SystemExit("HEALTHCHECK reports unhealthy: " + docker(
                    "inspect", "--format", "{{json .State.Health}}", name).stdout[-1500:])
            return state == "healthy"
        wait_for("the HEALTHCHECK", healthy, 90)
        log("catalog: HEALTHCHECK healthy")
    except BaseException:
        print(docker("logs", "--tail", "50", name, check=False).stderr, file=sys.stderr)
        raise
    finally:
        docker("rm", "--force", name, check=False)


def check_operator(docker: Docker, image: str, redis_url: str) -> None:
    log("operator: apply -f operator/examples/policies.yaml")
    examples = ROOT / "operator" / "examples" / "policies.yaml"
    done = docker("run", "--rm", *AS_THE_CHART_RUNS, "-v", f"{examples}:/policies.yaml:ro",
                  image, "python", "-m", "cache_operator", "apply", "-f", "/policies.yaml",
                  "--redis-url", redis_url, timeout=120)
    print(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-if-unavailable", action="store_true",
                        help="exit 0 with the reason when Docker cannot run here")
    args = parser.parse_args()
    started = time.monotonic()
    tag = run(sys.executable, str(ROOT / "scripts" / "kind-image-tag.py")).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="hc-image-test-") as tmp:
        workdir = Path(tmp)
        try:
            docker = Docker()
            with docker_daemon(docker, workdir):
                base = base_image(docker, workdir)
                images = {}
                for target in ("catalog", "operator"):
                    images[target] = f"{PREFIX}/{target}:{tag}"
                    log(f"building {images[target]} (target {target}, base {base})")
                    docker("build", "--network=host", "--build-arg", f"PYTHON_IMAGE={base}",
                           "--target", target, "-t", images[target], str(ROOT), timeout=1800)
                with redis_server(workdir) as redis_url, database() as database_url:
                    check_catalog(docker, images["catalog"], redis_url, database_url)
                    check_operator(docker, images["operator"], redis_url)
                for image in images.values():
                    docker("image", "rm", image, check=False)
        except Unavailable as exc:
            if not args.skip_if_unavailable:
                raise SystemExit(f"image test cannot run: {exc}") from None
            print(f"SKIPPED image test: {exc}")
            return
    log(f"image test passed in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
