"""The reconcile loop: which fence is written when, and how.

``queue`` holds the keys of fences whose objects may have changed and runs them coalesced, one at a time per
key, bounded, retried later after an outage, with sweeps behind everything else. ``reconciler`` is what a
run does: compute a fence's desired status and Sidecar (the domain core decides) and hand them to a writer.
Neither imports Kubernetes or faust: the worker wires in the Kubernetes writer (``kube.sink``) and the
computation over learned state and the cluster cache.
"""
