"""The official ``kubernetes`` client's connection, made the way kopf's login
is: in a pod the service account, elsewhere ``$KUBECONFIG`` or
``~/.kube/config``. Shared by the workload reader and the ``cleanup`` command.
"""

from __future__ import annotations

import os
from typing import Any


def api_client() -> Any:
    """A ``kubernetes.client.ApiClient`` for the current environment."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    except config.ConfigException:
        # $KUBECONFIG read now: the client reads it once, at import time
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG") or None,
            client_configuration=configuration)
    return client.ApiClient(configuration)
