"""A small RetinaNet for 128 px images, trained from scratch (no downloaded weights).

A 10-conv backbone (strides 2..32) feeds a 3-level FPN (strides 8, 16, 32) and
torchvision's RetinaNet head with GroupNorm in its towers (as retinanet_resnet50_fpn_v2;
GroupNorm keeps the towers stable from scratch at batch 8). Anchor sizes cover the
data set's objects (about 14 to 80 px). The loss is focal (torchvision's), AP-loss, RS
loss or aLRP loss (``aploss_cuda.integrations.torchvision``: ``use_ap_loss``,
``use_rank_sort_loss``, ``use_alrp_loss``); nothing else differs.
"""

from collections import OrderedDict
from functools import partial

from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork

from aploss_cuda.integrations.torchvision import use_alrp_loss, use_ap_loss, use_rank_sort_loss

FPN_CHANNELS = 64
ANCHOR_SIZES = ((16, 20, 25), (32, 40, 50), (64, 80, 101))  # one tuple per FPN level
ASPECT_RATIOS = (0.5, 1.0, 2.0)
LOSSES = ("focal", "ap", "rs", "alrp")
DEFAULT_DELTA = {"ap": 1.0, "rs": 0.5, "alrp": 1.0}  # the papers' defaults
# aLRP's self-balancing weight is updated once an epoch: 512 training images at batch 8.
DEFAULT_SB_PERIOD = 64


def _conv(cin, cout, stride):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyBackboneFPN(nn.Module):
    """Five stride-2 stages of two 3x3 convs; the last three go through an FPN."""

    def __init__(self, widths=(16, 32, 64, 96, 128), out_channels=FPN_CHANNELS):
        super().__init__()
        stages, cin = [], 3
        for w in widths:
            stages.append(nn.Sequential(_conv(cin, w, 2), _conv(w, w, 1)))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(list(widths[2:]), out_channels)
        self.out_channels = out_channels  # RetinaNet reads this

    def forward(self, x):
        features = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 2:
                features[f"p{i + 1}"] = x
        return self.fpn(features)


def small_retinanet(num_classes, loss="focal", delta=None, image_size=128, sb_period=DEFAULT_SB_PERIOD):
    """A RetinaNet for ``image_size`` px images; ``loss``: one of LOSSES.

    ``delta``: the ranking loss's step half-width (default DEFAULT_DELTA[loss]);
    ``sb_period``: iterations between aLRP's self-balancing updates (one epoch).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    anchors = AnchorGenerator(ANCHOR_SIZES, (ASPECT_RATIOS,) * len(ANCHOR_SIZES))
    head = RetinaNetHead(
        FPN_CHANNELS,
        anchors.num_anchors_per_location()[0],
        num_classes,
        norm_layer=partial(nn.GroupNorm, 16),
    )
    model = RetinaNet(
        TinyBackboneFPN(),
        num_classes,
        min_size=image_size,
        max_size=image_size,  # no resizing: the images are already this size
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
        anchor_generator=anchors,
        head=head,
        # Ranking losses order scores but do not calibrate them: with the default sigmoid
        # threshold of 0.05 such a model can lose whole images' detections. Keep the
        # top-k of every level for every loss (low-score detections only add recall).
        score_thresh=0.0,
        detections_per_img=100,  # COCO's maxDets
    )
    if loss != "focal":
        delta = DEFAULT_DELTA[loss] if delta is None else delta
    if loss == "ap":
        use_ap_loss(model, delta=delta)
    elif loss == "rs":
        use_rank_sort_loss(model, delta=delta)
    elif loss == "alrp":
        use_alrp_loss(model, delta=delta, sb_period=sb_period)
    return model
