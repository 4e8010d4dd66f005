"""lazystream: Slime-style lazy loading for Istio meshes, as a Kafka stream processor.

The package is layered: a pure domain core (no faust, no Kubernetes client), thin stream agents
(:mod:`lazystream.stream`), Kubernetes I/O (:mod:`lazystream.kube`) and one CLI (:mod:`lazystream.cli`)
that wires them together.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
