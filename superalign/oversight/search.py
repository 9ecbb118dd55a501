"""A batched backward pass for ``mctx``'s tree search, linear instead of quadratic in simulations.

mctx's ``backward`` is ``jax.vmap`` of a ``while_loop`` that carries the whole tree. Vmapping a
while loop whose condition differs across the batch makes JAX ``select`` every carried array
between the old and new value at every iteration, so each simulation copies the ``[games, nodes,
actions]`` tree arrays: the search costs O(simulations^2). Measured on this CPU (512 debate games,
k = 6, 200 simulations a move): 45 s with mctx's pass, 8 s with this one, identical results.

``batched_backward`` runs one unbatched loop until every game's path reaches the root, and writes
only the ``[games]`` entries on the path (inactive games write their old value back).
``linear_backward()`` swaps it in while a search is traced; the compiled search keeps it.
"""

from __future__ import annotations

import contextlib
import threading

import jax
import jax.numpy as jnp
from mctx._src import search as mctx_search
from mctx._src.tree import Tree

_LOCK = threading.Lock()


def batched_backward(tree: Tree, leaf_index: jax.Array) -> Tree:
  """mctx's backup of ``leaf_index`` ``[games]`` to the root: the same arithmetic, batched."""
  games = jnp.arange(leaf_index.shape[0])

  def continuing(carry):
    return jnp.any(carry[2] != Tree.ROOT_INDEX)

  def step(carry):
    tree, leaf_value, index = carry
    active = index != Tree.ROOT_INDEX
    keep = lambda new, old: jnp.where(active, new, old)
    parent = jnp.where(active, tree.parents[games, index], Tree.ROOT_INDEX)
    action = jnp.where(active, tree.action_from_parent[games, index], 0)
    count = tree.node_visits[games, parent]
    value = (tree.children_rewards[games, parent, action]
             + tree.children_discounts[games, parent, action] * leaf_value)
    parent_value = (tree.node_values[games, parent] * count + value) / (count + 1.0)
    child_visits = tree.children_visits[games, parent, action]
    tree = tree.replace(
        node_values=tree.node_values.at[games, parent].set(
            keep(parent_value, tree.node_values[games, parent])),
        node_visits=tree.node_visits.at[games, parent].set(keep(count + 1, count)),
        children_values=tree.children_values.at[games, parent, action].set(
            keep(tree.node_values[games, index], tree.children_values[games, parent, action])),
        children_visits=tree.children_visits.at[games, parent, action].set(
            keep(child_visits + 1, child_visits)))
    return tree, keep(value, leaf_value), keep(parent, index)

  leaf_index = jnp.asarray(leaf_index, jnp.int32)
  tree, _, _ = jax.lax.while_loop(
      continuing, step, (tree, tree.node_values[games, leaf_index], leaf_index))
  return tree


@contextlib.contextmanager
def linear_backward():
  """Traces mctx searches inside this block with ``batched_backward``."""
  with _LOCK:
    original = mctx_search.backward
    mctx_search.backward = batched_backward
    try:
      yield
    finally:
      mctx_search.backward = original
