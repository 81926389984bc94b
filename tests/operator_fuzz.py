"""Hostile calls of every public operator in torch.ops.aploss, run in a child process by
tests/test_hostile_inputs.py so that a crash fails the test instead of killing the run.

    python tests/operator_fuzz.py TARGET

Each case takes the internal tensors of a valid call (a forward's state, offsets and
positive gradients; rank_positives' positives; ...) and breaks one of them: a wrong size
or dtype, offsets that decrease or leave [0, P], positions out of range or repeated, NaN
in the state, a word of the workspace overwritten. Every such call must raise a
TypeError or ValueError, except where the overwritten word is one that pass 2 does not
read (the call must then return the valid call's gradient, bitwise) or a value that it
reads (a finite gradient; see pass2_cases). The
unbroken calls run first and must succeed. The child prints one line per case,
"start NAME | KIND" before the call and "raised NAME | TYPE: MESSAGE" or
"returned NAME | RESULT" after it; the parent reads the cases of a child that died.
"""

import sys

import operators
import torch

from devices import TARGETS

N = 240


def replaced(t, index, value):
    out = t.clone()
    out.view(-1)[index] = value
    return out


def problem():
    g = torch.Generator().manual_seed(7)
    scores = torch.randn(N, generator=g)
    labels = torch.zeros(N, dtype=torch.int64)
    labels[torch.randperm(N, generator=g)[:20]] = 1
    labels[torch.randperm(N, generator=g)[:10]] = -1
    targets = torch.where(labels == 1, torch.rand(N, generator=g) * 0.9 + 0.1, labels.float())
    return scores, labels, targets


def pass2_cases(name, scores, labels, outputs, grouped):
    """The backward with the forward's outputs (operators.saved: state, offsets,
    positive_grads, classes), each broken in turn."""
    state, offsets, positive_grads, classes = (outputs.state, outputs.offsets,
                                               outputs.positive_grads, outputs.classes)
    codes = outputs.codes if grouped else None
    one = torch.ones(())

    def call(state=state, offsets=offsets, positive_grads=positive_grads, classes=classes,
             codes=codes, grad_output=one, delta=1.0):
        return lambda: operators.backward(grad_output, scores, labels, classes, codes, state,
                                          offsets, positive_grads, delta, "sorted")

    num_pos = positive_grads.shape[0]
    yield f"{name}: valid", call(), None
    broken = {
        "offsets[-1] = 10**9": dict(offsets=replaced(offsets, -1, 10**9)),
        "offsets[0] = -5": dict(offsets=replaced(offsets, 0, -5)),
        "offsets float": dict(offsets=offsets.double()),
        "offsets empty": dict(offsets=offsets[:0]),
        "state short": dict(state=state[:-8]),
        "state float": dict(state=state.float()),
        "positive_grads position N + 5": dict(positive_grads=replaced(positive_grads, 0, N + 5)),
        "positive_grads position -1": dict(positive_grads=replaced(positive_grads, 0, -1)),
        "positive_grads position 0.5": dict(positive_grads=replaced(positive_grads, 0, 0.5)),
        "positive_grads repeated position": dict(
            positive_grads=replaced(positive_grads, 2, positive_grads[0, 0].item())),
        "positive_grads NaN gradient": dict(positive_grads=replaced(positive_grads, 1,
                                                                    float("nan"))),
        "positive_grads one row more": dict(positive_grads=torch.cat(
            [positive_grads, positive_grads.new_tensor([[N - 1.0, 0.0]])])),
        "positive_grads (P, 3)": dict(positive_grads=torch.zeros(num_pos, 3, dtype=torch.float64)),
        "positive_grads float32": dict(positive_grads=positive_grads.float()),
        "grad_output of two values": dict(grad_output=torch.ones(2)),
        "grad_output int": dict(grad_output=torch.ones((), dtype=torch.int64)),
        "delta 0": dict(delta=0.0),
        "delta 1e-310": dict(delta=1e-310),
        "delta NaN": dict(delta=float("nan")),
    }
    if grouped:
        broken["codes int64"] = dict(codes=codes.long())
        broken["offsets not increasing"] = dict(offsets=offsets.flip(0))
    if classes.numel():
        # A workspace's positives all have a row (no process_group on this path).
        broken["positive_grads empty"] = dict(positive_grads=positive_grads[:0])
        broken["classes short"] = dict(classes=classes[:-1])
        broken["classes without a positive"] = dict(
            classes=replaced(classes, int(positive_grads[0, 0]) // 32, 0))
        # Every 23rd word of the workspace overwritten, twice. With a NaN (as a double, and
        # as the float in its upper half) the call must raise or, where pass 2 does not
        # read the word (the forward's sort keys, its scratch), return the valid call's
        # gradient bitwise. With 2**40 (a large integer, a subnormal double) it must raise
        # or return a finite gradient: a gradient piece changed to another finite number
        # is a state pass 2 cannot tell from a forward's.
        valid = call()()
        workspace_words = state.view(torch.int64)
        nan_word = torch.tensor(float("nan"), dtype=torch.float64).view(torch.int64).item()
        for word in range(0, workspace_words.numel(), 23):
            for value, kind in ((nan_word, "unread"), (2**40, "finite")):
                overwritten = call(state=replaced(workspace_words, word, value).view(torch.uint8))
                yield (f"{name}: workspace word {word} = {value:#x}",
                       lambda overwritten=overwritten, valid=valid: _outcome(overwritten(), valid),
                       kind)
    else:
        rows = state.view(torch.float64).view(5, -1)
        broken["state NaN"] = dict(state=replaced(rows, 3, float("nan")).view(-1).view(torch.uint8))
        broken["state's scores unsorted"] = dict(
            state=rows.flip(1).contiguous().view(-1).view(torch.uint8))
        broken["state's shift changed"] = dict(
            state=replaced(rows, rows.shape[1] + 1, rows[1, 1].item() - 3.0).view(-1)
            .view(torch.uint8))
        broken["state's weight negative"] = dict(
            state=replaced(rows, 2 * rows.shape[1], -1.0).view(-1).view(torch.uint8))
    for what, change in broken.items():
        yield f"{name}: {what}", call(**change), (TypeError, ValueError)


def _outcome(result, valid):
    if torch.equal(result, valid):
        return "same"
    return "finite" if bool(result.isfinite().all()) else "non-finite"


def stage_cases(scores, labels, targets):
    gathered = operators.gather(scores, labels, None)
    positives, offsets, group, positions, memory_rank = operators.rank_positives(gathered, 1, 1.0)
    fp = operators.pass1(scores, labels, None, positives, offsets, group, 1.0)
    num_pos = positives.shape[1]
    positive_targets = targets[positions].double()
    regression = torch.rand(num_pos, dtype=torch.float64)
    f32 = torch.float32

    yield "rank_positives: valid", lambda: operators.rank_positives(gathered, 1, 1.0), None
    for what, g, groups in [
        ("code >= num_groups", replaced(gathered, num_pos, 3.0), 1),
        ("code 0.5", replaced(gathered, num_pos, 0.5), 2),
        ("NaN score", replaced(gathered, 0, float("nan")), 1),
        ("position -1", replaced(gathered, 2 * num_pos, -1.0), 1),
        ("(2, P)", gathered[:2], 1),
        ("num_groups 0", gathered, 0),
    ]:
        yield f"rank_positives: {what}", (lambda g=g, groups=groups: operators.rank_positives(
            g, groups, 1.0)), (TypeError, ValueError)

    def pass1(positives=positives, offsets=offsets, group=group, codes=None):
        return lambda: operators.pass1(scores, labels, codes, positives, offsets, group, 1.0)

    def positive_stage(positives=positives, offsets=offsets, group=group, positions=positions,
                       fp=fp):
        ranked = (positives, offsets, group, positions, memory_rank)
        return lambda: operators.loss_stage("ap", ranked, fp, 1.0, loss_dtype=f32)

    def rank_sort_stage(positions=positions, fp=fp, targets=positive_targets, offsets=offsets):
        ranked = (positives, offsets, group, positions, memory_rank)
        return lambda: operators.loss_stage("rank_sort", ranked, fp, 0.5, per_positive=targets,
                                            loss_dtype=f32)

    def alrp_stage(memory_rank=memory_rank, regression=regression, positives=positives):
        ranked = (positives, offsets, group, positions, memory_rank)
        return lambda: operators.loss_stage("alrp", ranked, fp, 1.0, per_positive=regression,
                                            loss_dtype=f32)

    yield "gather: codes int64", lambda: operators.gather(
        scores, labels, torch.zeros(N, dtype=torch.int64)), (TypeError, ValueError)
    yield "pass1: valid", pass1(), None
    yield "positive_stage: valid", positive_stage(), None
    yield "rank_sort_stage: valid", rank_sort_stage(), None
    yield "alrp_stage: valid", alrp_stage(), None
    unsorted = positives.flip(1).contiguous()
    shifted = replaced(positives, num_pos + 1, positives[0, 0].item() - 10.0)
    for what, thunk in {
        "pass1: offsets[1] = 10**7": pass1(offsets=replaced(offsets, 1, 10**7)),
        "pass1: offsets[1] = -3": pass1(offsets=replaced(offsets, 1, -3)),
        "pass1: offsets out of order": pass1(offsets=offsets.flip(0)),
        "pass1: positives unsorted": pass1(positives=unsorted),
        "pass1: positives' shift changed": pass1(positives=shifted),
        "pass1: positives NaN": pass1(positives=replaced(positives, 0, float("nan"))),
        "pass1: positives (3, P)": pass1(positives=torch.cat([positives, positives[:1]])),
        "pass1: positive_group 5": pass1(group=replaced(group, 0, 5)),
        "pass1: positive_group float": pass1(group=group.double()),
        "pass1: codes int64": pass1(codes=torch.zeros(N, dtype=torch.int64)),
        "positive_stage: offsets[1] = 10**7": positive_stage(offsets=replaced(offsets, 1, 10**7)),
        "positive_stage: offsets[1] = -1": positive_stage(offsets=replaced(offsets, 1, -1)),
        "positive_stage: positions -1": positive_stage(positions=replaced(positions, 0, -1)),
        "positive_stage: positions one short": positive_stage(positions=positions[:-1]),
        "positive_stage: false positives NaN": positive_stage(fp=replaced(fp, 0, float("nan"))),
        "positive_stage: false positives negative": positive_stage(fp=replaced(fp, 0, -1.0)),
        "positive_stage: positives unsorted": positive_stage(positives=unsorted),
        "rank_sort_stage: target 1.5": rank_sort_stage(targets=replaced(positive_targets, 0, 1.5)),
        "rank_sort_stage: target 0": rank_sort_stage(targets=replaced(positive_targets, 0, 0.0)),
        "rank_sort_stage: targets float32": rank_sort_stage(targets=positive_targets.float()),
        "rank_sort_stage: offsets[-1] = 10**9": rank_sort_stage(
            offsets=replaced(offsets, -1, 10**9)),
        "alrp_stage: memory_rank repeated": alrp_stage(memory_rank=replaced(memory_rank, 0,
                                                                            memory_rank[1].item())),
        "alrp_stage: memory_rank P": alrp_stage(memory_rank=replaced(memory_rank, 0, num_pos)),
        "alrp_stage: regression loss negative": alrp_stage(regression=replaced(regression, 0, -1.0)),
        "alrp_stage: regression loss inf": alrp_stage(regression=replaced(regression, 0,
                                                                          float("inf"))),
        "alrp_stage: positives unsorted": alrp_stage(positives=unsorted),
    }.items():
        yield what, thunk, (TypeError, ValueError)


def cases():
    scores, labels, targets = problem()
    ungrouped = operators.saved("ap", operators.forward("ap", scores, labels))
    yield from pass2_cases("pass2 ungrouped", scores, labels, ungrouped, False)
    ids = torch.arange(N) % 3
    grouped = operators.saved("ap", operators.forward("ap", scores, labels, ids))
    yield from pass2_cases("pass2 grouped", scores, labels, grouped, True)
    rank_sort = operators.saved("rank_sort",
                                operators.forward("rank_sort", scores, targets, None, 0.5))
    rs_labels = rank_sort.labels
    yield from pass2_cases("pass2 rank_sort", scores, rs_labels if rs_labels.numel() else labels,
                           rank_sort, False)
    yield from stage_cases(scores, labels, targets)


def main(target_name):
    target = next(t for t in TARGETS if t.name == target_name)
    with target.running():
        for name, thunk, expected in cases():
            kind = "valid" if expected is None else expected if isinstance(expected, str) else "broken"
            print(f"start {name} | {kind}", flush=True)
            try:
                result = thunk()
            except Exception as e:  # reported to the parent, which judges it
                message = str(e).splitlines()[0] if str(e) else ""
                print(f"raised {name} | {type(e).__name__}: {message}", flush=True)
            else:
                print(f"returned {name} | {result if isinstance(result, str) else 'the result'}",
                      flush=True)
    print("finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
