"""Probes run inside pods: an HTTP GET and a name lookup, with what images carry."""

from __future__ import annotations

import re
import shlex
import urllib.error
import urllib.request
from typing import Any

from harness.errors import Result

# What provision/nginx-demo.sh deploys: the Deployment and the NodePort Service
# "nginx", pods labelled app=nginx, serving the project's page.
DEMO_NAMESPACE = "minicluster-demo"
DEMO_NAME = "nginx"
DEMO_SELECTOR = "app=nginx"
EXPECTED_PAGE = "<h1>MiniCluster</h1>"

# curl (the nginx image has it), else wget, else bash's /dev/tcp: Debian's
# nginx image carries only the last.
_HTTP_PROBE = """
host={host}; port={port}
if command -v curl >/dev/null 2>&1; then
  curl -sS -m {timeout} -o - -w '\\nHTTP-STATUS %{{http_code}}\\n' "http://$host:$port/"
elif command -v wget >/dev/null 2>&1; then
  wget -q -T {timeout} -O - "http://$host:$port/" && echo 'HTTP-STATUS 200'
else
  exec 3<>"/dev/tcp/$host/$port" || exit 7
  printf 'GET / HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n' "$host" >&3
  timeout {timeout} cat <&3
fi
"""

_STATUS = re.compile(r"^(?:HTTP-STATUS (\d{3})|HTTP/\d(?:\.\d)? (\d{3}))", re.M)


def http_probe_argv(host: str, port: int, timeout_s: int = 5) -> list[str]:
    """Return the argv that GETs http://host:port/ from inside a pod."""
    script = _HTTP_PROBE.format(
        host=shlex.quote(host), port=int(port), timeout=int(timeout_s)
    )
    return ["bash", "-c", script]


def parse_http_probe(result: Result) -> tuple[int, str]:
    """Return (HTTP status, body) from a probe's output; status 0 when none came."""
    codes = [int(a or b) for a, b in _STATUS.findall(result.stdout)]
    return (codes[-1] if codes else 0), result.stdout


def describe_http(code: int, body: str, result: Result | None = None) -> str:
    """Return what an HTTP answer looked like, for a check's "seen"."""
    if code == 0:
        err = (
            (result.stderr.strip().splitlines() or ["no answer"])[-1] if result else ""
        )
        return f"no HTTP answer ({err})" if err else "no HTTP answer"
    page = "the MiniCluster page" if EXPECTED_PAGE in body else "another page"
    return f"HTTP {code} with {page}"


def http_get(url: str, timeout_s: float) -> tuple[int, str]:
    """GET ``url`` from this machine, bypassing any proxy; status 0 on no answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as answer:
            status: int = answer.status
            return status, answer.read(65536).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(65536).decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        reason: Any = getattr(exc, "reason", exc)
        return 0, str(reason)
