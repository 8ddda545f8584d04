"""Adversarial attacks on the detector: model in, [0, 1] pixels in, adversarial pixels out.

Grouped by threat model, as torchattacks does:

* white-box L∞: ``FGSM``, ``PGD(norm="linf")``, ``EOTPGD`` (compression-robust)
* white-box L2: ``PGD(norm="l2")``, ``CWL2``
* black-box: ``Transfer`` (craft on a substitute, apply to the target)
"""

from server.robust.attacks.base import Attack, check_images, check_labels
from server.robust.attacks.cw import CWL2
from server.robust.attacks.eot import EOTPGD, Transform, hussain_transforms
from server.robust.attacks.fgsm import FGSM, PAPER_EPS
from server.robust.attacks.pgd import PGD
from server.robust.attacks.registry import ATTACK_NAMES, create_attack
from server.robust.attacks.transfer import Transfer, TransferReport

LINF_ATTACKS = (FGSM, PGD, EOTPGD)
L2_ATTACKS = (PGD, CWL2)
BLACK_BOX_ATTACKS = (Transfer,)

__all__ = [
    "ATTACK_NAMES",
    "BLACK_BOX_ATTACKS",
    "CWL2",
    "EOTPGD",
    "FGSM",
    "L2_ATTACKS",
    "LINF_ATTACKS",
    "PAPER_EPS",
    "PGD",
    "Attack",
    "Transfer",
    "TransferReport",
    "Transform",
    "check_images",
    "check_labels",
    "create_attack",
    "hussain_transforms",
]
