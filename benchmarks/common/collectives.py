"""Bytes that torch.distributed collectives are given, counted from outside the library.

    from common.collectives import CollectiveBytes   # with benchmarks/ on sys.path

    with CollectiveBytes() as meter:
        loss = aploss_cuda.ap_loss(scores, labels, process_group=group)
        loss.backward()
    meter.calls   # [(op, bytes), ...] in call order, e.g.
                  # [("all_gather", 16), ("all_gather", 8480), ("all_reduce", 8008)]
    meter.total   # sum of the bytes

For one ap_loss call with process_group, as aploss_cuda/distributed.py communicates
today: the first all_gather is the counts exchange, the second all_gather the positives
(no second one when no rank has a positive), the all_reduce the false positives.

For the duration of the block, the collectives below are replaced by wrappers on the
torch.distributed module, so every caller that looks them up there (``dist.all_gather``
after ``import torch.distributed as dist``) is counted; a caller holding its own
reference to the function (``from torch.distributed import all_gather``) is not. The
bytes are those of the input tensor this rank passes (numel x element size):
``tensor`` of all_gather, all_reduce and broadcast, ``input_tensor`` of
all_gather_into_tensor and all_gather_single (where this torch has it). On exit the
original functions are back, even after an error.
"""

import torch.distributed as dist

# op name -> index of its input tensor among the positional arguments, and its keyword
INPUT_ARGUMENT = {
    "all_gather": (1, "tensor"),
    "all_gather_into_tensor": (1, "input_tensor"),
    "all_gather_single": (1, "input_tensor"),
    "all_reduce": (0, "tensor"),
    "broadcast": (0, "tensor"),
}


class CollectiveBytes:
    def __init__(self):
        self.calls = []
        self._originals = {}

    @property
    def total(self):
        return sum(size for _, size in self.calls)

    def _counting(self, op, original):
        position, keyword = INPUT_ARGUMENT[op]

        def collective(*args, **kwargs):
            tensor = args[position] if len(args) > position else kwargs[keyword]
            self.calls.append((op, tensor.numel() * tensor.element_size()))
            return original(*args, **kwargs)

        return collective

    def __enter__(self):
        for op in filter(lambda op: hasattr(dist, op), INPUT_ARGUMENT):
            self._originals[op] = getattr(dist, op)
            setattr(dist, op, self._counting(op, self._originals[op]))
        return self

    def __exit__(self, *exc):
        for op, original in self._originals.items():
            setattr(dist, op, original)
        self._originals.clear()
        return False
