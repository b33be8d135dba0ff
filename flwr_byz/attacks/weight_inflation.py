"""Weight inflation: the corrupted clients lie about their number of examples.

FedAvg (McMahan et al., AISTATS 2017) weights client k by the n_k it reports, and Flower's
strategies read n_k from the reply (``num-examples`` in the Message API,
``FitRes.num_examples`` in the legacy API). Nothing proves that number: a Byzantine client
controls it as it controls its update. Combined with any update attack, a claim of 10^6 x
its real count gives it almost all the weight of every rule that takes weights at face
value (the weighted mean, and a weighted geometric median or Multi-Krum average), whatever
that rule's breakdown bound in *numbers of clients*. flwr-byz's strategies ignore reported
weights by default for every robust rule (docs/strategies.md, the weight policy); this
attack is how that policy is tested.
"""

from __future__ import annotations

import numpy as np

from ._common import check_finite_scalar
from .catalogue import register_attack

INT64_MAX = int(np.iinfo(np.int64).max)


@register_attack("weight_inflation", kind="weight", knowledge="its own number of examples",
                 params={"weight_factor": 1e6, "weight_value": None, "inner": "sign_flip"},
                 paper="FedAvg trusts the reported n_k (McMahan et al., AISTATS 2017)")
def inflate_num_examples(num_examples, *, factor: float = 1e6, value: float | None = None) -> int:
    """The number of examples a weight-inflating client claims.

    Args:
        num_examples: its true count (>= 0).
        factor: claim ``factor * num_examples`` (default 10^6); ignored when ``value`` is given.
        value: claim exactly this count instead.

    Returns an int (what ``FitRes.num_examples`` and Flower's messages carry), rounded and
    capped at 2**63 - 1; a client with no data counts as one example before the factor.
    Raises ``ValueError`` on a negative or non-finite count, factor or value.
    """
    true = check_finite_scalar("num_examples", num_examples, nonnegative=True)
    if value is None:
        claim = max(true, 1.0) * check_finite_scalar("factor", factor, nonnegative=True)
    else:
        claim = check_finite_scalar("value", value, nonnegative=True)
    return INT64_MAX if claim >= INT64_MAX else int(claim + 0.5)
