"""Kubernetes I/O: everything that talks to the API server. It owns the API clients and their connection
pools, the watch cache of the cluster (:mod:`~lazystream.kube.informers`, the one ``ClusterView``), the
idempotent sink that writes ServiceFence status and Sidecars, the leader Lease and the duties it gates
(autoFence, the fallback objects), access reviews, CRD installation, clean-up, snapshots for the CLI, and
the Kubernetes error vocabulary (:mod:`~lazystream.kube.errors`). What to write is the domain core's
answer; it is independent of the stream layer.
"""
