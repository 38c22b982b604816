"""Planning: where each block of an early-exit DNN runs (FIN, the exact optimum, baselines).

Works on numbers only (never imports onnx, onnxruntime or torch). Public entry points:

- ``documents.load_scenario(path)``, ``documents.load_network(path)``, ``documents.load_card_file(path)``,
  ``documents.single_application(card, network, source, max_latency_s, min_accuracy)`` (the types they
  return are in ``problem``)
- ``solve.solve(scenario, solver="fin", gamma=..., lam=...) -> SolveResult``
- ``binding.add_binding(scenario, result, gamma)`` (which constraints bind, docs/planner.md),
  ``plan.plan_document(scenario, result, timings=False, base_dir=None) -> dict`` (``finplan.plan/1``),
  ``plan.validate_plan(doc)``
- ``evaluate.evaluate(app, network, options, placement, final_exit, thresholds=None, usage=None)``
- per-solver functions on an ``AppContext`` (``context.contexts(scenario)``): ``fin.fin`` (its graph: ``fin_graph``),
  ``exhaustive.exhaustive``, ``milp.milp`` (a list of contexts, jointly), ``baselines.*``
"""
