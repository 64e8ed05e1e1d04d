"""`make audit`: pip-audit over the images' lock files, with a plain verdict.

pip-audit's own summary says "No known vulnerabilities found" even when it
could audit nothing (a database that does not know the pinned versions, or
one it cannot reach). This wrapper first checks that the vulnerability service
answers, then counts what was really audited and says so:

- exit 1: a pinned dependency has a known vulnerability (listed);
- exit 0: otherwise, with "audited N of M" and, when the service is
  unreachable or did not know some versions, a plain "NOT AUDITED" line;
  AUDIT_STRICT=1 turns an incomplete audit into exit 2 (for a CI with network).

The lock is installed with --require-hashes, so pip-audit reads it as is
(--disable-pip): no resolver, no download of the packages themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

# pip-audit's "pypi" service: the JSON API of each release carries its advisories.
SERVICE = "pypi"
PROBE_URL = "https://pypi.org/pypi/pip/json"


def service_reachable() -> str | None:
    """None if the vulnerability service answers, else why not."""
    try:
        with urllib.request.urlopen(PROBE_URL, timeout=10) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return None


def audit(pip_audit: str, lock: str) -> tuple[list[dict], list[dict], int] | str:
    """(vulnerable, skipped, total) for one lock file, or pip-audit's error text."""
    done = subprocess.run(
        [pip_audit, "-r", lock, "--require-hashes", "--disable-pip", "-s", SERVICE,
         "--format", "json", "--progress-spinner", "off"],
        capture_output=True, text=True, timeout=900)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return (done.stderr or done.stdout).strip()[-2000:]
    deps = report.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    return vulnerable, skipped, len(deps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pip-audit", required=True, help="the pinned pip-audit executable")
    parser.add_argument("locks", nargs="+", help="requirements files with hashes")
    args = parser.parse_args()
    strict = os.environ.get("AUDIT_STRICT") == "1"

    why = service_reachable()
    if why is not None:
        print(f"NOT AUDITED: the vulnerability database ({SERVICE}, {PROBE_URL}) is"
              f" unreachable: {why}")
        return 2 if strict else 0

    found = incomplete = False
    for lock in args.locks:
        result = audit(args.pip_audit, lock)
        if isinstance(result, str):
            print(f"NOT AUDITED: {lock}: pip-audit failed: {result}")
            incomplete = True
            continue
        vulnerable, skipped, total = result
        audited = total - len(skipped)
        print(f"{lock}: audited {audited} of {total} pinned packages;"
              f" {len(vulnerable)} with known vulnerabilities")
        for dep in vulnerable:
            ids = ", ".join(f"{v['id']} (fixed in {', '.join(v.get('fix_versions') or ['-'])})"
                            for v in dep["vulns"])
            print(f"  VULNERABLE {dep['name']}=={dep['version']}: {ids}")
        if skipped:
            incomplete = True
            names = ", ".join(d["name"] for d in skipped[:8])
            more = f" and {len(skipped) - 8} more" if len(skipped) > 8 else ""
            print(f"  NOT AUDITED: {len(skipped)} packages the database does not know"
                  f" ({names}{more})")
        found = found or bool(vulnerable)
    if found:
        return 1
    return 2 if (incomplete and strict) else 0


if __name__ == "__main__":
    sys.exit(main())
