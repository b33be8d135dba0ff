"""The core of flwr-byz: robust aggregation rules on one stacked (n, d) update matrix.

No Flower import here. Every rule takes the client updates as an (n, d) float32 array and
its parameters by keyword (``f`` = number of Byzantine clients to tolerate) and returns
the aggregate as a 1-D array; ``return_report=True`` returns ``(aggregate, report)``.
Every rule checks its own bound on n and f before computing anything.
"""

from ._validate import ByzantineBoundError, as_update_matrix, nonfinite_rows
from .bulyan import bulyan
from .centered_clipping import centered_clipping
from .clustering import clipped_clustering, clustering
from .coordinate import meamed, median, trimmed_mean
from .crfl import ParameterSmoothing
from .dnc import dnc
from .distances import pairwise_sq_distances
from .flame import flame
from .fltrust import fltrust
from .foolsgold import foolsgold
from .geometric_median import geometric_median
from .krum import krum, krum_scores, multi_krum
from .mda import mda
from .mean import mean
from .monna import monna
from .pipeline import PRE_AGGREGATORS, RULES, PreAggregator, RobustAggregator, minimum_clients
from .registry import REGISTRY, RuleSpec, register_rule, resolve_rule
from .preaggregation import adaptive_robust_clipping, bucketing, clip_norms, nearest_neighbor_mixing
from .report import AggregationReport
from .reputation import Reputation
from .signguard import signguard
from .signsgd import sign_majority_vote
from .spectral import caf, smea

__all__ = [
    "AggregationReport", "ByzantineBoundError", "ParameterSmoothing", "adaptive_robust_clipping", "PRE_AGGREGATORS", "PreAggregator", "REGISTRY", "RULES",
    "Reputation", "RobustAggregator", "RuleSpec", "register_rule", "resolve_rule", "as_update_matrix", "bucketing", "bulyan", "caf", "centered_clipping", "clipped_clustering", "clustering", "dnc",
    "clip_norms", "flame", "fltrust", "foolsgold", "geometric_median", "krum", "krum_scores", "mda", "meamed", "mean", "median", "minimum_clients", "monna",
    "multi_krum", "nearest_neighbor_mixing", "nonfinite_rows", "pairwise_sq_distances",
    "sign_majority_vote", "signguard", "smea", "trimmed_mean",
]
