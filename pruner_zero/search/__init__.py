"""Genetic-programming search for pruning metrics.

Modules: ``operators`` (DEAP gen/cx/mut/sel functions wired into one toolbox),
``loop`` (the generational loop, I/O only through a run directory),
``rundir`` (files of a run, atomic checkpoints, resume), ``fitness`` (the
"evaluate this metric" call with caches and racing), ``api`` (``search``).

Kept free of heavy imports so that ``import pruner_zero`` stays fast.
"""
