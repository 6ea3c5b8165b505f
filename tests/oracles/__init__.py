"""Oracles shared by the tests and bench/: counted live tensor bytes of a training step (step_bytes) and of the
loss (loss_bytes), the plan's longest example (plan_fit), and a fake OpenAI-compatible endpoint (endpoint).

The tests import them as `oracles.*` (pytest puts tests/ on the path); bench/ scripts add tests/ to sys.path.
"""
