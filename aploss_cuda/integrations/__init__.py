"""Drop-in uses of the ranking losses (ap_loss, rank_sort_loss, alrp_loss) inside other
libraries' models.

Each submodule imports its library at import time, so it is importable only where that
library is installed (``pip install .[torchvision]`` for ``aploss_cuda.integrations.torchvision``).
This package itself imports nothing optional.
"""
