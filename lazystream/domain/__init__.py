"""lazystream's pure domain core: parsing, resolution, fence computation and rendering.

Nothing here imports faust or the Kubernetes client (an import contract checks it): these modules are
plain functions over plain data, so the worker, ``lazystream render`` and the tests run the same code.
"""
