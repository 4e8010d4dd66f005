"""The process runtime every long-running command shares: garbage-collector settings
(:mod:`~lazystream.runtime.heap`), the memory report and allocator tuning (:mod:`~lazystream.runtime.memory`),
log set-up in Slime's formats and rotation (:mod:`~lazystream.runtime.logs`), task cancellation
(:mod:`~lazystream.runtime.tasks`) and retry pacing (:mod:`~lazystream.runtime.backoff`). It knows no
Kafka, no Kubernetes and no domain rule; of lazystream it imports only the configuration's log settings.
"""
