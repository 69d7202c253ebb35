"""Where the operator's API server is and how to talk to it (Kopf and the kubernetes client).

In a pod both use the service account; on a workstation the kubeconfig. Tests (and `kubectl proxy`)
pass an explicit URL, which both Kopf (through a login handler) and the kubernetes client then use.
"""

from dataclasses import dataclass
from typing import Any

import kopf
import kubernetes


@dataclass(frozen=True)
class KubeTarget:
    server: str | None = None  # e.g. "http://127.0.0.1:8001"; None: in-cluster or kubeconfig

    def api_client(self) -> kubernetes.client.ApiClient:
        if self.server is not None:
            configuration = kubernetes.client.Configuration()
            configuration.host = self.server
            return kubernetes.client.ApiClient(configuration)
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return kubernetes.client.ApiClient()

    def register_login(self, registry: kopf.OperatorRegistry) -> None:
        """Point Kopf at the explicit server; without one, Kopf's own login handlers apply."""
        if self.server is None:
            return
        server = self.server

        @kopf.on.login(registry=registry)
        def login_explicit(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server, insecure=True, default_namespace="default")
