"""The admin API's writes need a caller the API server vouches for (a real worker, API server and tokens).

No token and a token the API server does not know are 401; a ServiceAccount without the right to update
ServiceFences in the namespace is 403, with one that has it (a Role in that namespace) a reset is 202 but a
sweep (every namespace) is not; the CLI sends its kubeconfig's token. The API server's audit log shows
the worker asking: TokenReviews and SubjectAccessReviews.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from lazystream.kube.client import bearer_token
from tests.fixtures.kube import AuditLog
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer
from tests.fixtures.worker import LAZYSTREAM, apply_objects, bookinfo_in, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(240)]


def post(url: str, token: str | None) -> tuple[int, dict[str, Any], str]:
    """Status, JSON body and WWW-Authenticate header of one POST."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), ""
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers.get("WWW-Authenticate", "")


def service_account_token(core: client.CoreV1Api, namespace: str, name: str) -> str:
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata={"name": name}))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    return str(core.create_namespaced_service_account_token(name, namespace, request).status.token)


def test_writes_need_a_token_with_the_right_to_update_fences(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_api: client.ApiClient,
    kube_dynamic: DynamicClient,
    core: client.CoreV1Api,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    builder, _ = bookinfo_in(namespace)
    apply_objects(kube_dynamic, builder.objects())
    nobody = service_account_token(core, namespace, "nobody")
    resetter = service_account_token(core, namespace, "resetter")
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata={"name": "fence-writer"},
            rules=[
                client.V1PolicyRule(
                    api_groups=["microservice.slime.io"], resources=["servicefences"], verbs=["update"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata={"name": "fence-writer"},
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="fence-writer"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="resetter", namespace=namespace)],
        ),
    )
    env = worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace)
    audit = AuditLog(kube_server.audit_log)
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{env['LAZYSTREAM_WEB_PORT']}"
    reset = f"{base}/fences/{namespace}/productpage/reset"
    try:
        worker.wait_for_output("lazystream ready", timeout=120)

        status, body, challenge = post(reset, None)
        assert (status, challenge) == (401, 'Bearer realm="lazystream"')
        assert "bearer token is required" in body["error"]
        assert post(reset, "not-a-token")[:2] == (401, {"error": "the bearer token is not valid"})
        status, body, _ = post(reset, nobody)
        assert status == 403
        assert body["error"] == (
            f"system:serviceaccount:{namespace}:nobody may not update servicefences in namespace {namespace}"
        )
        request = urllib.request.Request(f"{base}/lazyload/debug/svfReset?ns={namespace}")
        with pytest.raises(urllib.error.HTTPError, match="401"):  # Slime's reset, a GET, is a write too
            urllib.request.urlopen(request, timeout=30)

        assert post(reset, resetter)[:2] == (202, {"reset": [f"{namespace}/productpage"]})
        assert post(f"{base}/sweep", resetter)[0] == 403  # a sweep needs the right in every namespace
        admin = bearer_token(kube_server.kubeconfig)
        assert post(f"{base}/sweep", admin)[0] == 202

        # the CLI sends the kubeconfig's token; a namespace without fences is an error, not "reset 0"
        cli_env = dict(env, KUBECONFIG=str(kube_server.kubeconfig), LAZYSTREAM_ADMIN_URL=base)
        done = subprocess.run(
            [LAZYSTREAM, "reset", f"{namespace}/productpage"], env=cli_env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"reset 1 fence(s): {namespace}/productpage"
        refused = subprocess.run(
            [LAZYSTREAM, "reset", f"{namespace}/productpage", "--token", nobody],
            env=cli_env,
            capture_output=True,
            text=True,
        )
        assert refused.returncode == 1
        assert "may not update servicefences" in refused.stderr
        missing = subprocess.run(
            [LAZYSTREAM, "reset", f"{fresh_name}-none"], env=cli_env, capture_output=True, text=True
        )
        assert missing.returncode == 1
        assert f"no ServiceFences in namespace {fresh_name}-none" in missing.stderr
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]
    asked = {e.ref("resource") for e in audit.events() if e.verb == "create" and e.code == 201}
    assert {"tokenreviews", "subjectaccessreviews"} <= asked
