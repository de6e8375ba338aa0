"""Random but valid inputs for any registry entry, built from what it `needs` (policyforge/algos/contract.py).

Contract tests call every entry through `call_entry`, so a new function only has
to declare its batch inputs as keyword-only arguments to be covered.
"""

from policyforge.algos.contract import B, K, T, V, call_entry, extra_inputs  # noqa: F401
from policyforge.algos.contract import sample_batch as make_batch  # noqa: F401
