"""Walk-forward counterfactual tuning and shadow arms (docs/TUNER.md).

The seed tuner (``mm_sim.runtime.tuner``) reacts to drivers; this package asks the simulator
instead: what would the iteration that just ended have earned under other overrides?
``window`` holds an iteration's events and start state, ``counterfactual`` replays and scores
it under one set of overrides, ``search`` proposes the candidates, ``walkforward`` decides,
``cluster`` runs the replays on Dask, ``shadow`` runs candidates live beside the primary.
"""
