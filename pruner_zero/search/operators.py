"""DEAP operators of the metric search, as plain functions wired into one toolbox.

Every function is named by its role (gen*, cx*, mut*, sel*) and uses Python's
global ``random`` module, as DEAP does; the loop owns that state so a run can
be checkpointed and resumed exactly.
"""
from __future__ import annotations

import operator
import random
from typing import Any, Callable, Sequence

from deap import base, creator, gp, tools

from pruner_zero.metric.simplify import simplify
from pruner_zero.metric.space import SearchSpace

FITNESS_CLASS = "PZFitnessMin"
INDIVIDUAL_CLASS = "PZIndividual"
NODE_MUTATION_PROB = 0.5
"""Chance that a mutation replaces one node (else a whole subtree)."""
RECIPE_MUTATION_PROB = 0.3
"""Chance that a mutation changes the recipe gene (with more than one recipe to choose from)."""
MUT_SUBTREE_MIN, MUT_SUBTREE_MAX = 0, 2
"""Depth range of the random subtree that subtree mutation grafts in."""


def individual_class() -> type:
    """The creator Individual (a PrimitiveTree with a minimised fitness), created once per process.

    Besides ``fitness`` an individual carries what the evaluator told about it:
    ``key`` (canonical key), ``fingerprint`` (mask hash) and ``status``; and, when the genome
    holds the recipe, its ``recipe`` gene.
    """
    if not hasattr(creator, FITNESS_CLASS):
        creator.create(FITNESS_CLASS, base.Fitness, weights=(-1.0,))
    if not hasattr(creator, INDIVIDUAL_CLASS):
        creator.create(INDIVIDUAL_CLASS, gp.PrimitiveTree, fitness=getattr(creator, FITNESS_CLASS),
                       key=None, fingerprint=None, status=None, recipe=None)
    return getattr(creator, INDIVIDUAL_CLASS)


def make_individual(tree: gp.PrimitiveTree) -> Any:
    """A fresh Individual (invalid fitness) holding the nodes of ``tree``."""
    return individual_class()(tree)


def gen_ramped(pset: gp.PrimitiveSet, min_: int, max_: int, type_: type | None = None) -> list:
    """Ramped half-and-half: half full trees, half grown trees, depths min_..max_."""
    return gp.genHalfAndHalf(pset, min_=min_, max_=max_, type_=type_)


def cx_one_point(ind1: Any, ind2: Any) -> tuple[Any, Any]:
    """One-point subtree crossover: swap a random subtree of each parent (in place)."""
    return gp.cxOnePoint(ind1, ind2)


def cx_candidates(ind1: Any, ind2: Any, recipes: Sequence[Any] = ()) -> tuple[Any, Any]:
    """One-point crossover of the trees; with recipe genes, the two also swap their recipes
    half of the time (no random draw without genes: a plain search's stream is unchanged)."""
    ind1, ind2 = cx_one_point(ind1, ind2)
    if recipes and random.random() < 0.5:
        ind1.recipe, ind2.recipe = ind2.recipe, ind1.recipe
    return ind1, ind2


def mut_node_or_subtree(individual: Any, expr: Callable[..., list], pset: gp.PrimitiveSet,
                        recipes: Sequence[Any] = ()) -> tuple[Any]:
    """Node mutation keeps the shape (fine steps); subtree mutation explores; pick one at random.
    With recipe genes, a mutation changes the recipe instead RECIPE_MUTATION_PROB of the time."""
    if len(recipes) > 1 and random.random() < RECIPE_MUTATION_PROB:
        individual.recipe = random.choice([r for r in recipes if r != individual.recipe])
        return (individual,)
    if random.random() < NODE_MUTATION_PROB:
        return gp.mutNodeReplacement(individual, pset=pset)
    return gp.mutUniform(individual, expr=expr, pset=pset)


def sel_tournament(individuals: list, k: int, tournsize: int) -> list:
    """k tournament winners (lower fitness wins; inf never beats a finite value)."""
    return tools.selTournament(individuals, k, tournsize=tournsize)


def simplify_individual(individual: Any, pset: gp.PrimitiveSet) -> Any:
    """OOS in place: replace the nodes with the simplified tree, keep the Individual object."""
    new = simplify(individual, pset=pset)
    if list(new) != list(individual):
        individual[0:len(individual)] = list(new)
    return individual


def shrink_neighbours(tree: gp.PrimitiveTree) -> list[gp.PrimitiveTree]:
    """Every tree made by replacing one operator node with one of its argument subtrees, in node
    order: the simpler metrics next to a good one (W^1.5*sqrt(G*X) has W*sqrt(G*X) among them).
    GP reaches a good region fast but rarely takes the one step back to its simplest member."""
    out = []
    for i, node in enumerate(tree):
        if not isinstance(node, gp.Primitive):
            continue
        end = tree.searchSubtree(i).stop
        child = i + 1
        for _ in range(node.arity):
            span = tree.searchSubtree(child)
            out.append(gp.PrimitiveTree(tree[:i] + tree[span] + tree[end:]))
            child = span.stop
    return out


def build_toolbox(space: SearchSpace, tournament: int, max_height: int, max_size: int,
                  recipes: Sequence[Any] = ()) -> base.Toolbox:
    """All operators of one search, wired in one place, with static height/size limits;
    ``recipes``: the recipe genes to choose from (none: every candidate under the run's one)."""
    pset = space.pset()
    ind_cls = individual_class()
    tb = base.Toolbox()
    tb.register("expr", gen_ramped, pset=pset, min_=space.init_min_depth, max_=space.init_max_depth)
    tb.register("individual", tools.initIterate, ind_cls, tb.expr)
    tb.register("population", tools.initRepeat, list, tb.individual)
    tb.register("select", sel_tournament, tournsize=tournament)
    tb.register("mate", cx_candidates, recipes=tuple(recipes))
    tb.register("expr_mut", gen_ramped, pset=pset, min_=MUT_SUBTREE_MIN, max_=MUT_SUBTREE_MAX)
    tb.register("mutate", mut_node_or_subtree, expr=tb.expr_mut, pset=pset,
                recipes=tuple(recipes))
    for op in ("mate", "mutate"):
        tb.decorate(op, gp.staticLimit(key=operator.attrgetter("height"), max_value=max_height))
        tb.decorate(op, gp.staticLimit(key=len, max_value=max_size))
    tb.register("simplify", simplify_individual, pset=pset)
    return tb
