"""The worker's admin HTTP API: health, readiness, resets of learned state, and "explain fence".

Endpoints (JSON in and out)::

    GET  /healthz                              200 {"status": "ok"} while the event loop answers (liveness)
    GET  /readyz                               200 / 503 {"ready": bool, "checks": {"<name>": bool, ...}}
    POST /fences/{namespace}/{name}/reset      202 {"reset": ["ns/name"]}; 404 for an unknown fence
    POST /namespaces/{namespace}/reset         202 {"reset": [every fence of the namespace]}; 404: none
    GET  /fences/{namespace}/{name}/explain    200 the explanation (FenceExplanation.to_dict); 404 unknown
    GET  /lazyload/debug/svfReset?ns=N[&name=F] Slime's reset endpoint, same effect (for existing scripts)
    POST /sweep                                202 {"scheduled": n}: every fence this worker owns is
                                               recomputed now; 503 while its learned state cannot be read
    GET  /sweep                                200 {"pending": n}: fences of the sweeps under way not yet
                                               checked (0: every sweep is through)
    GET  /debug/memory[?deep=1][&trim=1]       200 the worker's memory (:mod:`lazystream.runtime.memory`)

Writes (the resets, Slime's reset, the sweep, and ``/debug/memory`` with ``deep`` or ``trim``) are
authorised by the ``authorize`` hook when the worker sets one (``web.writeAuth: kubernetes``): a request
without a bearer token, or with one the API server does not accept, is answered 401; one whose user may not
update ServiceFences where it asks, 403.

A reset is Slime's ``svfReset``: the fence forgets everything it learned. It is a ``reset`` message on the
edges topic keyed by the fence (the table agent is the only writer of learned state), so it
is ordered with the fence's observations and reaches whichever worker holds the fence. The API answers 202
once the message is handed to the producer; the Sidecar shrinks when the table agent has applied it.

The layer is thin: it parses the request and calls what the worker gives it (:class:`AdminHooks`); the
explanation itself is the domain core's (:mod:`lazystream.domain.explain`). :class:`AdminServer` runs the
app on its own aiohttp runner (faust's own web server must then be off, or on another port).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web

from lazystream.domain import learned
from lazystream.domain.cluster import ClusterObjectError, ClusterView, ObjectKey
from lazystream.domain.explain import FenceExplanation, explain_fence, rejections_for
from lazystream.domain.fences import FenceOptions, fence_from_object

log = logging.getLogger(__name__)

SendEdge = Callable[[ObjectKey, Mapping[str, Any]], Awaitable[None]]
"""Produce one edge message keyed by the fence (the worker's ``WorkerApp.send_edge``)."""
Explain = Callable[[ObjectKey], FenceExplanation | None]
"""The fence's explanation, or None when there is no such fence."""
FencesIn = Callable[[str], Iterable[ObjectKey]]
"""The fences of a namespace (from the watch cache)."""


class Decision(Protocol):
    """An authorisation decision (``lazystream.kube.access.Decision`` fits)."""

    @property
    def status(self) -> int: ...

    @property
    def user(self) -> str: ...

    @property
    def reason(self) -> str: ...


Authorize = Callable[[str | None, str], Awaitable[Decision]]
"""``authorize(bearer token or None, namespace)``: may the caller change learned state there ("" for
every namespace)?"""


@dataclass
class AdminHooks:
    """What the admin API needs from the worker; all callables run on the event loop and must be quick."""

    send_edge: SendEdge
    fences_in: FencesIn
    explain: Explain
    ready: Mapping[str, Callable[[], bool]] = field(default_factory=dict)
    """Named readiness checks (e.g. ``cachesSynced``, ``appRunning``); ready when all are true."""
    live: Callable[[], bool] = lambda: True
    """Liveness beyond "the loop answers" (e.g. no fatal error recorded)."""
    clock: Callable[[], float] = time.time
    sweep: Callable[[], int | None] | None = None
    """Recompute every fence the worker owns now, as its periodic full sweep does (the sink writes what
    changed); how many were scheduled, or None while the learned state cannot be read."""
    sweep_pending: Callable[[], int] | None = None
    """How many fences of the sweeps under way are not yet checked (the sink's ``sweep_pending``)."""
    memory: Callable[[bool, bool], Mapping[str, Any]] | None = None
    """``memory(deep, trim)``: the worker's memory report (:func:`lazystream.runtime.memory.report`); ``deep``
    measures every structure (slow: seconds at 10k fences, under the cache's lock)."""
    authorize: Authorize | None = None
    """Authorises writes; None lets every caller write (``web.writeAuth: none``)."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_INDENT_2), status=status, content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


TOKEN_HEADER = "X-Lazystream-Token"  # noqa: S105 - a header's name
"""Where the caller's token is when the request comes through the API server's pod proxy, which removes
the ``Authorization`` header it authenticated (``lazystream.kube.workers``)."""


def bearer_token(request: web.Request) -> str | None:
    """``Authorization: Bearer <token>``, else :data:`TOKEN_HEADER`."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get(TOKEN_HEADER, "").strip() or None


async def _refused(hooks: AdminHooks, request: web.Request, namespace: str) -> web.Response | None:
    """None when the caller may write in ``namespace`` ("" for all), else the response that says why."""
    if hooks.authorize is None:
        return None
    decision = await hooks.authorize(bearer_token(request), namespace)
    if decision.status == 200:
        log.info("admin: %s %s by %s", request.method, request.path, decision.user)
        return None
    log.warning(
        "admin: %s %s refused (%s): %s", request.method, request.path, decision.status, decision.reason
    )
    response = _error(decision.status, decision.reason)
    if decision.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="lazystream"'
    return response


def create_admin_app(hooks: AdminHooks) -> web.Application:
    """The aiohttp application of the admin API (see the module docstring for the endpoints)."""
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        if not hooks.live():
            return _json({"status": "failing"}, 503)
        return _json({"status": "ok"})

    @routes.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        checks = {name: bool(check()) for name, check in hooks.ready.items()}
        ready = all(checks.values())
        return _json({"ready": ready, "checks": checks}, 200 if ready else 503)

    @routes.post("/fences/{namespace}/{name}/reset")
    async def reset_fence(request: web.Request) -> web.Response:
        key = ObjectKey(request.match_info["namespace"], request.match_info["name"])
        if refused := await _refused(hooks, request, key.namespace):
            return refused
        if key not in set(hooks.fences_in(key.namespace)):
            return _error(404, f"no ServiceFence {key}")
        return await _reset(hooks, [key])

    @routes.post("/namespaces/{namespace}/reset")
    async def reset_namespace(request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        if refused := await _refused(hooks, request, namespace):
            return refused
        fences = sorted(hooks.fences_in(namespace))
        if not fences:
            return _error(404, f"no ServiceFences in namespace {namespace}")
        return await _reset(hooks, fences)

    @routes.get("/lazyload/debug/svfReset")
    async def slime_reset(request: web.Request) -> web.Response:
        namespace, name = request.query.get("ns", ""), request.query.get("name", "")
        if not namespace:
            return _error(400, "the ns query parameter is required")
        if refused := await _refused(hooks, request, namespace):
            return refused
        fences = sorted(hooks.fences_in(namespace))
        if name:
            fences = [k for k in fences if k.name == name]
            if not fences:
                return _error(404, f"no ServiceFence {namespace}/{name}")
        return await _reset(hooks, fences)

    @routes.get("/fences/{namespace}/{name}/explain")
    async def explain(request: web.Request) -> web.Response:
        key = ObjectKey(request.match_info["namespace"], request.match_info["name"])
        try:
            explanation = hooks.explain(key)
        except ClusterObjectError as exc:
            return _error(422, f"ServiceFence {key} cannot be read: {exc}")
        if explanation is None:
            return _error(404, f"no ServiceFence {key}")
        return _json(explanation.to_dict())

    @routes.post("/sweep")
    async def sweep(request: web.Request) -> web.Response:
        if hooks.sweep is None:
            return _error(404, "this process sweeps no fences")
        if refused := await _refused(hooks, request, ""):
            return refused
        scheduled = hooks.sweep()
        if scheduled is None:
            return _error(503, "the learned state cannot be read now (starting, rebalancing or stopping)")
        return _json({"scheduled": scheduled}, 202)

    @routes.get("/sweep")
    async def sweep_progress(request: web.Request) -> web.Response:
        if hooks.sweep_pending is None:
            return _error(404, "this process sweeps no fences")
        return _json({"pending": hooks.sweep_pending()})

    @routes.get("/debug/memory")
    async def memory(request: web.Request) -> web.Response:
        if hooks.memory is None:
            return _error(404, "no memory report in this process")
        flags = {name: request.query.get(name, "") in ("1", "true") for name in ("deep", "trim")}
        if any(flags.values()) and (refused := await _refused(hooks, request, "")):
            return refused  # deep holds the cache's lock for seconds, trim works the allocator
        return _json(hooks.memory(flags["deep"], flags["trim"]))

    app = web.Application()
    app.add_routes(routes)
    return app


async def _reset(hooks: AdminHooks, fences: list[ObjectKey]) -> web.Response:
    now = hooks.clock()
    done: list[str] = []
    for key in fences:
        try:
            await hooks.send_edge(key, learned.reset(now))
        except Exception as exc:
            log.exception("admin: reset of %s could not be sent", key)
            return _json({"error": f"reset of {key} not sent: {type(exc).__name__}", "reset": done}, 503)
        done.append(str(key))
    log.info("admin: reset learned state of %d fences: %s", len(done), ", ".join(done) or "none")
    return _json({"reset": done}, 202)


SHUTDOWN_TIMEOUT_S = 2.0
"""How long a stopping admin server waits for requests in flight."""


class AdminServer:
    """Runs the admin app on ``host:port`` (port 0: any free port, see :attr:`port`)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104 - a comparison
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        # aiohttp waits up to 60 s for requests in flight at cleanup; a stopping worker must not (its
        # sink has drained by then, and a scrape or probe can be retried against the next worker)
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.requested_port
        log.info("admin API on %s", self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


# -- the worker's hooks, from its parts ---------------------------------------------------------------------


def cache_fences_in(cache: ClusterView) -> FencesIn:
    """``fences_in`` over the watch cache."""

    def fences_in(namespace: str) -> list[ObjectKey]:
        with cache.reading():
            return sorted(k for k in cache.fences if k.namespace == namespace)

    return fences_in


def cache_explainer(
    cache: ClusterView,
    *,
    learned_state: Callable[[ObjectKey], learned.LearnedState | None],
    recent_rejections: Callable[[], Mapping[tuple[str, str], str]],
    options: FenceOptions,
    clock: Callable[[], float] = time.time,
) -> Explain:
    """``explain`` over the watch cache, the learned-state table and the ingest's recent rejections.

    ``learned_state(key)`` is the fence's decoded table value when this worker holds the fence's partition,
    else None (the explanation then uses the fence's ``status.metricStatus``, without times and counts).
    """

    def explain(key: ObjectKey) -> FenceExplanation | None:
        state = learned_state(key)
        rejected = rejections_for(key, recent_rejections())
        with cache.reading():
            obj = cache.fence(key)
            if obj is None:
                return None
            return explain_fence(fence_from_object(obj), state, cache.state, options, clock(), rejected)

    return explain
