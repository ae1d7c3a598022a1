"""Code for simulations, benchmarks and tests, kept apart from the engine (as gbstats keeps its
simulation code apart): the decision rule on numpy arrays (:mod:`.vectorized`), the legacy Student
t test and the bare two-sample tests with their :class:`.estimates.EffectEstimate`
(:mod:`.estimates`). Nothing in the loop imports this package; the tests hold it to the engine.
"""
