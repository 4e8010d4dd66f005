"""Who may change a worker's learned state: the caller's bearer token, reviewed by the API server.

The admin API's writes (resets, sweeps) wipe or recompute what lazystream learned, so they need the same
right as writing the fences themselves. As a Kubernetes aggregated server or kubelet does, the worker asks
the API server: a ``TokenReview`` says who the token belongs to, a ``SubjectAccessReview`` whether that
user may ``update`` ServiceFences in the namespace (every namespace, for a sweep). Answers are cached for
:data:`CACHE_SECONDS`, so a burst of requests costs two reviews.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from lazystream.kube.errors import short_reason

CACHE_SECONDS = 10.0
CACHE_ENTRIES = 1024
GROUP, RESOURCE, VERB = "microservice.slime.io", "servicefences", "update"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a review: ``status`` is the HTTP status to answer with (200: allowed, 401: no or
    an invalid token, 403: not allowed, 503: the API server could not be asked)."""

    status: int
    user: str = ""
    reason: str = ""


class AccessReviewer:
    """Reviews ``(token, namespace)`` against the API server through ``api`` (the worker's client, whose
    ServiceAccount needs ``create`` on ``tokenreviews`` and ``subjectaccessreviews``)."""

    def __init__(self, api: client.ApiClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.authn = client.AuthenticationV1Api(api)
        self.authz = client.AuthorizationV1Api(api)
        self.clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, Decision]] = OrderedDict()

    async def review(self, token: str | None, namespace: str) -> Decision:
        """May the holder of ``token`` update ServiceFences in ``namespace`` ("" for every namespace)?"""
        if not token:
            return Decision(401, reason="a bearer token is required (Authorization: Bearer <token>)")
        key = (token, namespace)
        cached = self._cache.get(key)
        now = self.clock()
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        decision = await asyncio.to_thread(self._review, token, namespace)
        if decision.status != 503:  # an unreachable API server is asked again next time
            self._cache[key] = (now, decision)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return decision

    def _review(self, token: str, namespace: str) -> Decision:
        try:
            review = self.authn.create_token_review(
                client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
            )
            status = review.status
            if not status or not status.authenticated or not status.user:
                return Decision(401, reason="the bearer token is not valid")
            user = status.user
            attributes = client.V1ResourceAttributes(
                group=GROUP, resource=RESOURCE, verb=VERB, namespace=namespace or None
            )
            access = self.authz.create_subject_access_review(
                client.V1SubjectAccessReview(
                    spec=client.V1SubjectAccessReviewSpec(
                        user=user.username,
                        groups=user.groups,
                        uid=user.uid,
                        extra=user.extra,
                        resource_attributes=attributes,
                    )
                )
            )
        except (ApiException, HTTPError, OSError) as exc:  # HTTPError: the API server could not be reached
            return Decision(503, reason=f"the API server could not review the token ({short_reason(exc)})")
        where = f"in namespace {namespace}" if namespace else "in every namespace"
        if access.status and access.status.allowed:
            return Decision(200, user=user.username or "")
        name = user.username or ""
        return Decision(403, user=name, reason=f"{name} may not {VERB} {RESOURCE} {where}")
