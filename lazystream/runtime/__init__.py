"""The process runtime every layer may use: retry pacing (:mod:`~lazystream.runtime.backoff`). It imports
nothing else of lazystream."""
