"""lazystream's pure domain core: parsing, resolution, fence computation and rendering.

Nothing here imports faust or the Kubernetes client (an import contract checks it): these modules are
plain functions over plain data, so the worker, ``lazystream render`` and the tests run the same code.
It is the bottom layer: it also owns what every layer shares about the cluster (``ClusterState`` and the
``ClusterView`` Protocol the watch cache fits, in :mod:`~lazystream.domain.cluster`) and the Go/Helm
template syntax of fence settings (:mod:`~lazystream.domain.templates`).
"""
