"""The Kubernetes API through the official client, from .minicluster/kubeconfig.

Objects are handled as the JSON the API serves (``sanitize_for_serialization``
of the client's models), so the parsers here are fed captured ``kubectl get -o
json`` output in tests and live objects in a run alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import KubeError, NoCluster, Result

logger = logging.getLogger(__name__)

KUBECONFIG = Path(".minicluster") / "kubeconfig"
REQUEST_TIMEOUT_S = 10
ROLE_LABEL = "node-role.kubernetes.io/"

JSON = dict[str, Any]


def kubeconfig_path(root: Path) -> Path:
    """Return where the control plane exported the admin kubeconfig."""
    return root / KUBECONFIG


@dataclass(frozen=True)
class NodeInfo:
    """What the acceptance criteria read from a Node object."""

    name: str
    ready: str  # "True", "False" or "Unknown": the Ready condition's status
    ready_reason: str
    roles: tuple[str, ...]
    internal_ip: str
    kubelet_version: str

    @property
    def is_ready(self) -> bool:
        return self.ready == "True"


def parse_node(obj: JSON) -> NodeInfo:
    """Return the NodeInfo of one Node object (API JSON)."""
    meta, status = obj.get("metadata", {}), obj.get("status", {})
    ready: JSON = next(
        (c for c in status.get("conditions", []) if c.get("type") == "Ready"), {}
    )
    labels = meta.get("labels") or {}
    roles = tuple(
        sorted(k[len(ROLE_LABEL) :] for k in labels if k.startswith(ROLE_LABEL))
    )
    internal = [
        a["address"]
        for a in status.get("addresses", [])
        if a.get("type") == "InternalIP"
    ]
    return NodeInfo(
        name=meta.get("name", ""),
        ready=ready.get("status", "Unknown"),
        ready_reason=ready.get("reason", "") or ready.get("message", ""),
        roles=roles,
        internal_ip=internal[0] if internal else "",
        kubelet_version=status.get("nodeInfo", {}).get("kubeletVersion", ""),
    )


def parse_readyz(text: str) -> dict[str, bool]:
    """Return each check of ``/readyz?verbose``: ``{"etcd": True, ...}``.

    Input looks like::

        [+]ping ok
        [+]etcd ok
        [-]informer-sync failed: reason withheld
        readyz check failed
    """
    checks = {}
    for line in text.splitlines():
        if line.startswith(("[+]", "[-]")):
            name = line[3:].split()[0]
            checks[name] = line.startswith("[+]")
    return checks


@dataclass(frozen=True)
class PodInfo:
    """A pod's name, node, IP and whether it is Ready."""

    name: str
    namespace: str
    node: str
    ip: str
    phase: str
    ready: bool


def parse_pod(obj: JSON) -> PodInfo:
    meta, spec, status = (obj.get(k, {}) for k in ("metadata", "spec", "status"))
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return PodInfo(
        meta.get("name", ""),
        meta.get("namespace", ""),
        spec.get("nodeName", "") or "",
        status.get("podIP", "") or "",
        status.get("phase", ""),
        ready,
    )


class Kube:
    """A client of the cluster's API server, built from a kubeconfig file."""

    def __init__(self, kubeconfig: Path) -> None:
        if not kubeconfig.is_file():
            raise NoCluster(f"no kubeconfig at {kubeconfig}")
        from kubernetes import client, config

        self.kubeconfig = kubeconfig
        try:
            self.api = config.new_client_from_config(config_file=str(kubeconfig))
        except Exception as exc:
            raise KubeError(f"cannot load kubeconfig {kubeconfig}: {exc}") from exc
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.server = self.api.configuration.host

    def _json(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
        logger.debug("API %s at %s", what, self.server)
        try:
            return func(*args, **kwargs)
        except ApiException as exc:
            raise KubeError(
                f"{what} at {self.server}: HTTP {exc.status} {exc.reason}"
            ) from exc
        except (HTTPError, OSError) as exc:
            raise KubeError(
                f"{what} at {self.server}: {exc}; is the control plane up "
                "(`minicluster status`)?"
            ) from exc

    def nodes(self) -> list[JSON]:
        """Return every Node object as API JSON."""
        items = self._call("list nodes", self.core.list_node).items
        return [self._json(item) for item in items]

    def pods(self, namespace: str, selector: str = "") -> list[JSON]:
        result = self._call(
            f"list pods in {namespace}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
        return [self._json(item) for item in result.items]

    def deployment(self, namespace: str, name: str) -> JSON:
        obj = self._call(
            f"read deployment {namespace}/{name}",
            self.apps.read_namespaced_deployment,
            name,
            namespace,
        )
        return dict(self._json(obj))

    def service(self, namespace: str, name: str) -> JSON:
        obj = self._call(
            f"read service {namespace}/{name}",
            self.core.read_namespaced_service,
            name,
            namespace,
        )
        return dict(self._json(obj))

    def get_raw(self, path: str) -> tuple[int, str]:
        """GET ``path`` (``/readyz?verbose``) on the API server; status and body."""
        resource, _, query = path.partition("?")
        params = [(q, "") for q in query.split("&") if q]
        method, url, headers, _body, _post = self.api.param_serialize(
            "GET",
            resource,
            query_params=params,
            header_params={"Accept": "text/plain, */*"},
            auth_settings=["BearerToken"],
        )
        response = self._call(
            f"GET {path}", self.api.call_api, method, url, header_params=headers
        )
        body = response.read() or b""
        return int(response.status), body.decode(errors="replace")

    def exec(
        self, namespace: str, pod: str, argv: list[str], timeout_s: float = 20
    ) -> Result:
        """Run ``argv`` in ``pod`` and return its result (never raises on exit)."""
        from kubernetes import client, config
        from kubernetes.stream import stream

        # stream() swaps the request method of the client it is given while it
        # runs; a client of its own keeps parallel checks' calls off the socket.
        core = client.CoreV1Api(
            config.new_client_from_config(config_file=str(self.kubeconfig))
        )
        what = f"pod {namespace}/{pod}"
        logger.debug("RUN %s in %s", argv, what)
        ws = self._call(
            f"exec in {what}",
            stream,
            core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            command=argv,
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            _preload_content=False,
            _request_timeout=timeout_s,
        )
        try:
            ws.run_forever(timeout=timeout_s)
            stdout = ws.read_stdout() or ""
            stderr = ws.read_stderr() or ""
            try:
                code = ws.returncode
            except (ValueError, KeyError, IndexError, TypeError):
                # The error channel carries a message, not an exit code, when the
                # command could not start (not found in the image, say).
                code = 126
        finally:
            ws.close()
        if code is None:
            return Result(what, " ".join(argv), 124, stdout, f"{stderr}timed out")
        return Result(what, " ".join(argv), int(code), stdout, stderr)
