"""Attack mathematics: what the corrupted clients send, computed from what they know.

No Flower import here (the malicious clients in :mod:`flwr_byz.clients` wrap these).
Every model-poisoning attack takes the honest updates the attacker legitimately knows,
normally the corrupted clients' *own* honest updates as an (m, d) matrix (update = client
weights - global weights), and returns float32 update(s) to send. Arguments are named
``own_updates`` where the paper's attack needs nothing else, and ``known_updates`` where
the paper also studies an omniscient attacker (then pass the honest updates too).
"""

from .alie import alie_supporters, alie_update, alie_z_max
from .catalogue import ATTACK_SPECS, AttackSpec, attack_names, check_attack, register_attack
from .backdoor import (
    EdgeCaseBackdoor, PixelTrigger, SampleBackdoor, alie_box, alie_box_projection, attack_success_rate, dba_local_trigger,
    edge_case_backdoor, model_replacement, neurotoxin_mask, num_poisoned, poison_batch, replacement_gamma, rotated_tail,
)
from .classic import (
    GARBAGE_KINDS, constant_update, garbage_updates, gaussian_noise, inner_product_manipulation, sign_flipping,
)
from .data_poisoning import flip_labels
from .fang import fang_krum, fang_trimmed_mean, krum_lambda_bound
from .forecast import alie_forecast
from .mimic import mimic
from .minmax import DIRECTIONS, agr_tailored, min_max, min_sum
from .optimal import optimal_alie, optimal_ipm
from .weight_inflation import inflate_num_examples

__all__ = [
    "ATTACK_SPECS", "AttackSpec", "attack_names", "check_attack", "register_attack",
    "EdgeCaseBackdoor", "PixelTrigger", "SampleBackdoor", "alie_box", "alie_box_projection", "attack_success_rate",
    "dba_local_trigger", "edge_case_backdoor", "model_replacement", "neurotoxin_mask", "num_poisoned", "poison_batch",
    "replacement_gamma", "rotated_tail",
    "DIRECTIONS", "GARBAGE_KINDS", "alie_forecast", "alie_supporters", "alie_update", "alie_z_max",
    "constant_update", "fang_krum", "fang_trimmed_mean", "krum_lambda_bound", "flip_labels", "garbage_updates", "gaussian_noise", "inflate_num_examples",
    "inner_product_manipulation",
    "agr_tailored", "mimic", "min_max", "min_sum", "optimal_alie", "optimal_ipm", "sign_flipping",
]
