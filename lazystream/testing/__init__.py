"""lazystream's testing kit: records exactly as Fluent Bit, Envoy/Istio and lazystream's global-sidecar
produce them, and an in-memory cluster builder. Used by lazystream's own tests and by users' tests."""

from lazystream.testing.cluster import ClusterBuilder, bookinfo
from lazystream.testing.records import (
    envoy_json,
    fluent_bit,
    fluent_bit_cri,
    global_sidecar_record,
    istio_fields,
    istio_text_line,
)

__all__ = [
    "ClusterBuilder",
    "bookinfo",
    "envoy_json",
    "fluent_bit",
    "fluent_bit_cri",
    "global_sidecar_record",
    "istio_fields",
    "istio_text_line",
]
