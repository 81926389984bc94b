"""aploss_cuda: AP-loss (Chen et al., TPAMI 2020) as a fast PyTorch operator.

    loss = aploss_cuda.ap_loss(scores, labels)   # labels: 1 positive, 0 negative, -1 ignored
    loss.backward()                              # the paper's error-driven gradient
"""

from . import _ops  # noqa: F401  (loads the kernels, registers fake and autograd)
from ._info import info
from .loss import METHODS, APLoss, ap_loss

__all__ = ["ap_loss", "APLoss", "METHODS", "info"]
__version__ = "0.1.0"
