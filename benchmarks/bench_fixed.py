"""Section 'fixed': what a call costs whatever its work, at small N, where a loss costs what
it issues (Python, dispatch, autograd, allocations) more than what it computes: ap_loss,
rank_sort_loss and alrp_loss forward + backward against binary_cross_entropy_with_logits
(sum) forward + backward at the same N, in the same interleaved rounds. The Python layer's
validation and dispatch count. P = N / 100 in the init regime.
"""

import statistics

import torch

from common.inputs import make_problem
from common.machine import OtherProcessesCpu
from common.tables import fmt_ratio, fmt_time, markdown_table
from common.timing import interleaved, timed

import aploss_cuda

GOALS = {"ap_loss": 2.5, "rank_sort_loss": 3.0, "alrp_loss": 3.0}


def plan(cfg):
    return list(cfg.fixed_sizes)


def thunks(n, cfg):
    """{name: fwd+bwd thunk} of every loss at one N, on inputs made once."""
    scores, labels = make_problem(n, max(1, n // 100), "init", seed=cfg.seed, **cfg.problem)
    x = scores.detach().clone().requires_grad_(True)
    seed = torch.ones((), dtype=x.dtype, device=x.device)  # the incoming gradient, made once
    as_float = labels.clamp(min=0).to(x.dtype)
    targets = torch.where(labels == 1, torch.rand(n, device=x.device, dtype=x.dtype),
                          labels.to(x.dtype))
    regression = torch.rand(int((labels == 1).sum()), device=x.device)

    def bce():
        torch.nn.functional.binary_cross_entropy_with_logits(x, as_float, reduction="sum").backward(seed)

    return {
        "bce": bce,
        "ap_loss": lambda: aploss_cuda.ap_loss(x, labels).backward(seed),
        "rank_sort_loss": lambda: aploss_cuda.rank_sort_loss(x, targets).backward(seed),
        "alrp_loss": lambda: aploss_cuda.alrp_loss(x, labels, regression)[0].backward(seed),
    }


def run(cfg, progress):
    points = []
    for n in cfg.fixed_sizes:
        cpu = OtherProcessesCpu().start()
        calls = thunks(n, cfg)
        first = {k: timed(t)[0] for k, t in calls.items()}  # warm-up
        samples = interleaved(calls, first, rounds=max(cfg.rounds, 5), round_s=cfg.round_s,
                              budget_s=cfg.budget)
        median = {k: statistics.median(v) for k, v in samples.items()}
        points.append(dict(n=n, p=max(1, n // 100), median_s=median, samples=samples,
                           ratio={k: median[k] / median["bce"] for k in GOALS},
                           other_cpu_share=cpu.stop()))
        progress.step(f"fixed cost, N = {n:,}")
    return dict(threads=torch.get_num_threads(), goals=GOALS, points=points)


def markdown(section):
    lines = ["## Fixed cost: small N against BCE-with-logits", "",
             "Forward + backward, init regime, P = N / 100, medians of interleaved rounds; "
             f"{section['threads']} threads. Ratio: the loss over BCE in the same rounds.", ""]
    headers = ["N", "P", "BCE"] + [f"{k}, ratio" for k in GOALS]
    rows = [[f"{pt['n']:,}", f"{pt['p']:,}", fmt_time(pt["median_s"]["bce"])]
            + [f"{fmt_time(pt['median_s'][k])}, {fmt_ratio(pt['ratio'][k])}" for k in GOALS]
            for pt in section["points"]]
    lines += [markdown_table(headers, rows), ""]
    goal_rows = [[f"{k} / BCE, N = {pt['n']:,}", f"<= {goal}", fmt_ratio(pt["ratio"][k]),
                  "met" if pt["ratio"][k] <= goal else "not met"]
                 for pt in section["points"] for k, goal in section["goals"].items()]
    lines += ["### Goals", "", markdown_table(["goal", "target", "measured", ""], goal_rows), ""]
    return "\n".join(lines)
