"""lazystream: Slime-style lazy loading for Istio meshes, as a Kafka stream processor.

The package is layered (an import-linter ``layers`` contract in pyproject.toml checks it), top to bottom:
the commands (:mod:`lazystream.cli`) and the testing kit (:mod:`lazystream.testing`); the worker's wiring
(:mod:`lazystream.worker`, then :mod:`lazystream.metrics`); the I/O adapters, independent of each other
(:mod:`lazystream.stream`, :mod:`lazystream.kube`, :mod:`lazystream.globalsidecar`, :mod:`lazystream.ops`,
:mod:`lazystream.admin`, :mod:`lazystream.inputs`); the reconcile loop (:mod:`lazystream.controller`);
Kafka client set-up (:mod:`lazystream.kafka`) and the process runtime (:mod:`lazystream.runtime`); the
configuration (:mod:`lazystream.config`); and the pure domain core (:mod:`lazystream.domain`: no faust, no
Kubernetes client).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
