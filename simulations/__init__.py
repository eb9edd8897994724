"""Drift simulations for streamdas: a scenario catalog, a prequential runner, plots, and the
paper's experiments (``python -m simulations.paper``).

>>> from simulations import make_scenario
>>> make_scenario("complexity", 300, seed=0).drift_positions
[100, 200]
"""

from simulations.scenarios import SCENARIOS, Drift, ScenarioStream, list_scenarios, make_scenario

__all__ = ["SCENARIOS", "Drift", "ScenarioStream", "list_scenarios", "make_scenario"]
