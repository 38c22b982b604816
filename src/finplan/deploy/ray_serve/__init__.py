"""finplan's Ray Serve layer: a deployment folder served across machines (``finplan serve``).

Only this package imports ray, and only inside functions, so that the rest of finplan (and
``finplan --help``) works without the ``[ray]`` extra. Modules:

* ``wire``: tensors as ``.npy`` bytes (no pickle), stage messages and answers;
* ``graph``: the application as plain data (deployments, placement, routes), no ray;
* ``core``: request validation, exit-or-forward around ``NodeRuntime``, timeouts, no ray;
* ``app``: the Serve deployments; ``cluster``: local instance / joining a cluster, shutdown;
* ``client``: the HTTP client of ``finplan infer``; ``runner``: ``run_on_ray`` for ``finplan run --engine ray``.
"""
