"""aploss_cuda: AP-loss (Chen et al., TPAMI 2020) and its family (Rank & Sort, aLRP) as
fast PyTorch operators.

    loss = aploss_cuda.ap_loss(scores, labels)   # labels: 1 positive, 0 negative, -1 ignored
    loss.backward()                              # the paper's error-driven gradient

    ap_loss(scores, labels, group_ids=...)       # one ranking per image / class / query
    ap_loss(scores, labels, process_group=pg)    # one ranking across torch.distributed ranks

    rank_sort_loss(scores, targets)              # Rank & Sort loss: targets > 0 (IoU), 0, -1
    cls_loss, loc_loss = alrp_loss(scores, labels, regression_losses)   # aLRP loss
"""

__version__ = "0.1.0"  # the one place; pyproject.toml and info() read it

# First: loads the compiled kernels, or says why they cannot run with this torch.
from ._extension import _C  # noqa: F401
from . import _ops  # noqa: F401  (registers fake and autograd for the kernels)
from . import distributed  # noqa: F401  (distributed.RemoteRankError)
from ._info import info
from .loss import (
    METHODS,
    ALRPLoss,
    APLoss,
    RankSortLoss,
    RankSortParts,
    alrp_loss,
    ap_loss,
    rank_sort_loss,
)

__all__ = [
    "ap_loss",
    "APLoss",
    "rank_sort_loss",
    "RankSortLoss",
    "RankSortParts",
    "alrp_loss",
    "ALRPLoss",
    "METHODS",
    "info",
]
