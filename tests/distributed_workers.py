"""Worker processes of tests/test_distributed.py (a module of its own so that
torch.multiprocessing's spawn can import it in the children)."""

import os
import sys
import traceback

import torch
import torch.distributed as dist

import aploss_cuda

# The benchmark's meter of the bytes each collective is given.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from common.collectives import CollectiveBytes  # noqa: E402


def _init(rank, world, port, backend="gloo"):
    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )


def _save_and_exit(result, rank, out_dir):
    """Saves this rank's result, waits for every rank, tears gloo down and leaves without
    the interpreter's C++ teardown: about one exit in eight aborted in a destructor there
    ("terminate called without an active exception", seen with gloo and DDP, not with our
    kernels) and failed the run after every result was saved."""
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()  # no rank tears gloo down while a peer still talks to it
    dist.destroy_process_group()
    os._exit(0)


def _record_failure(rank, out_dir):
    with open(os.path.join(out_dir, f"rank{rank}.err"), "w") as f:
        f.write(traceback.format_exc())


def evaluate(sc, inputs, process_group=None):
    """One call of the scenario's loss (sc["loss"], default ap_loss) on `inputs` (this
    rank's part, or the full inputs in one process) and its backward: the detached
    outputs and the gradients, by name, on the CPU. aLRP backpropagates
    cls_loss + 0.5 * loc_loss, so that both components' gradients count."""
    loss = sc.get("loss", "ap_loss")
    scores = inputs["scores"].clone().requires_grad_()
    common = {"delta": sc["delta"], "group_ids": inputs.get("group_ids"),
              "process_group": process_group}
    grads = {"scores": scores}
    if loss == "ap_loss":
        total = aploss_cuda.ap_loss(
            scores, inputs["labels"], interpolate=sc["interpolate"], **common
        )
        outputs = {"loss": total}
    elif loss == "rank_sort_loss":
        parts = aploss_cuda.rank_sort_loss(scores, inputs["targets"], return_parts=True, **common)
        outputs, total = parts._asdict(), parts.loss
    elif loss == "alrp_loss":
        regression_losses = inputs["regression_losses"].clone().requires_grad_()
        grads["regression_losses"] = regression_losses
        cls_loss, loc_loss = aploss_cuda.alrp_loss(
            scores, inputs["labels"], regression_losses, **common
        )
        outputs, total = {"cls_loss": cls_loss, "loc_loss": loc_loss}, cls_loss + 0.5 * loc_loss
    else:
        raise ValueError(loss)
    total.backward()
    return (
        {name: value.detach().cpu() for name, value in outputs.items()},
        {name: leaf.grad.cpu() for name, leaf in grads.items()},
    )


def run_scenarios(rank, world, port, scenarios_path, out_dir, backend="gloo"):
    """Each scenario: this rank's slice of the inputs; records the outputs and gradients
    (on the CPU), or the error this rank raised. With nccl every rank works on its own
    GPU."""
    _init(rank, world, port, backend)
    device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    results = []
    try:
        for sc in torch.load(scenarios_path):
            part = {k: v.to(device) for k, v in sc["parts"][rank].items()}
            record = {}
            meter = CollectiveBytes()
            try:
                with meter:
                    outputs, grads = evaluate(sc, part, dist.group.WORLD)
                record = {"outputs": outputs, "grads": grads}
            except Exception as e:  # the test checks which error each rank saw
                record = {"error": type(e).__name__, "message": str(e)}
            record["bytes"] = bytes_by_step(meter.calls)
            results.append(record)
        _save_and_exit(results, rank, out_dir)
    except Exception:
        _record_failure(rank, out_dir)
        raise
    finally:
        dist.destroy_process_group()


def bytes_by_step(calls):
    """The three exchanges of aploss_cuda.distributed, from the collectives in call order:
    positive counts (all_gather), positives (all_gather, none without any positive) and
    the false-positive sums (all_reduce)."""
    gathers = [size for op, size in calls if op == "all_gather"]
    reduces = [size for op, size in calls if op == "all_reduce"]
    return {
        "counts": gathers[0] if gathers else 0,
        "positives": gathers[1] if len(gathers) > 1 else 0,
        "false_positives": reduces[0] if reduces else 0,
    }


class TinyDetectorHead(torch.nn.Module):
    """Logits for (anchors, classes) from (anchors, features)."""

    def __init__(self, features=6, classes=3):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(features, 8), torch.nn.Tanh())
        self.cls = torch.nn.Linear(8, classes)

    def forward(self, x):
        return self.cls(self.body(x))


def run_ddp(rank, world, port, data_path, out_dir):
    """One DDP step on this rank's slice; saves the parameter gradients."""
    _init(rank, world, port)
    try:
        data = torch.load(data_path)
        torch.manual_seed(0)
        model = TinyDetectorHead()
        model.load_state_dict(data["state"])
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        part = data["parts"][rank]
        scores = ddp(part["features"])
        loss = aploss_cuda.ap_loss(scores, part["labels"], process_group=dist.group.WORLD)
        (loss * dist.get_world_size()).backward()  # DDP averages: undo it (see README)
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        _save_and_exit({"loss": loss.detach(), "grads": grads}, rank, out_dir)
    except Exception:
        _record_failure(rank, out_dir)
        raise
    finally:
        dist.destroy_process_group()
