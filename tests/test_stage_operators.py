"""The stage operators aploss_cuda.distributed composes (gather, rank the positives,
pass 1, the loss's positive stage), run one after the other in one process: together they
give the one-call loss, for every loss, ungrouped and grouped, on every backend registered.
Their fakes are held by tests/test_opcheck.py."""

import operators
import pytest
import torch
from losses import LOSSES, problem, run

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("loss", LOSSES)
def test_stages_compose_to_the_one_call_loss(loss, grouped, device):
    scores, second, extra = problem(loss, (6, 50), seed=8, p_pos=0.1, dtype=torch.float64,
                                    ties=True)
    scores, second = scores.to(device), second.to(device)
    extra = {k: v.to(device) for k, v in extra.items()}
    codes = (torch.arange(50, device=device) % 3).to(torch.int32) if grouped else None
    labels = operators.rank_sort_labels(second) if loss == "rank_sort" else second
    gathered = operators.gather(scores, labels, codes)
    ranked = operators.rank_positives(gathered, 3 if grouped else 1, 1.0)
    positives, offsets, group, positions, _ = ranked
    fp = operators.pass1(scores, labels, codes, positives, offsets, group, 1.0)
    values = operators.per_positive(loss, ranked, second, extra.get("regression_losses"))
    outputs = operators.loss_stage(loss, ranked, fp, 1.0, per_positive=values)
    # every stage keeps [position, gradient] per positive, in the order it ranked them
    assert torch.equal(outputs[-1][:, 0], positions.double())
    ids = codes.long() if grouped else None
    expected, _ = run(loss, scores, second, group_ids=ids, delta=1.0, **extra)
    torch.testing.assert_close(outputs[0], expected, rtol=1e-12, atol=1e-12)
