"""Pure torch math of policyforge: advantages, losses, drift terms, aggregations.

Nothing here imports from the rest of the package; see registry.py for the tables.
"""

from policyforge.algos.registry import Entry, UnknownAlgorithm, check_kwargs, find, get, register, table  # noqa: F401
