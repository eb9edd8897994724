"""The paper's experiments, scaled down: ``python -m simulations.paper {fig1,fig2,table1,table23}``."""
