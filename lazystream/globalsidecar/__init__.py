"""The global-sidecar: the fallback HTTP/1.1 proxy that carries calls a workload's Sidecar does not list
yet to their destination, and reports each one as an access record so the worker learns it. It owns the
strict HTTP/1.1 parser and framing (:mod:`~lazystream.globalsidecar.http1`), the callback-driven hot path
(:mod:`~lazystream.globalsidecar.relay`), the stream-based path for unusual requests
(:mod:`~lazystream.globalsidecar.proxy`), upstream pooling and record emission; where a request goes is the
domain core's decision (:mod:`lazystream.domain.forwarding`).
"""
