"""Genetic-programming search for pruning metrics, floors from the bottom up.

``layout`` (the run directory's file names and words), ``options`` (every option, declared
once), ``settings`` (the GP's, fitness and confirmation settings), ``results`` (what the tail
measured), ``reaper`` (no Ray process outlives a search): light, read by the command line.
``config`` (options checked), ``stored`` (config.json written and read, the resume rule),
``checkpoint`` (checkpoint.json),
``operators`` (DEAP gen/cx/mut/sel in one toolbox), ``rundir`` (the run's files, atomic
checkpoints, resume), ``loop`` (the generational loop, I/O only through the run directory),
``fitness`` (evaluate a metric: caches, racing), ``evaluators`` (a run's evaluators, built
alike in the driver and the workers), ``workers`` (a Ray pool), ``api`` (``search``).

Kept free of imports so that ``import pruner_zero`` stays fast.
"""
