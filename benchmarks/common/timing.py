"""Interleaved timing of competing implementations.

Every implementation under comparison runs once per round, in turn, and its time is
the median over the rounds. A change of the machine's load during the run then slows
all of them alike, so the ratios of one run stay fair even where absolute times drift:
quote medians and ratios measured in one run, never a single absolute time.

The clock is ``torch.utils.benchmark.timer`` (it synchronizes the accelerator before it
reads the time). ``torch.utils.benchmark.Timer.timeit`` is not used: it makes two
untimed calls before every sample, which triples the cost of a multi-second baseline;
here each implementation is warmed up once per problem, by its check call.
"""

import itertools
import statistics

from torch.utils.benchmark import timer as clock

MAX_CALLS_PER_SAMPLE = 1000


def fwd_bwd(fn, scores, labels):
    """One forward and backward of fn(scores, labels); returns (loss, gradient). A fn may
    return (loss, gradient) itself, without autograd (the float64 reference does)."""
    scores.grad = None
    loss = fn(scores, labels)
    if isinstance(loss, tuple):
        return loss
    loss.backward()
    return loss.detach(), scores.grad


def timed(thunk):
    """(seconds, result) of one call."""
    start = clock()
    out = thunk()
    return clock() - start, out


def rotating(fn, copies):
    """A thunk running fwd_bwd(fn) on the next of the input copies: a repeated call does
    not find its inputs already in cache."""
    cycle = itertools.cycle(copies)
    return lambda: fwd_bwd(fn, *next(cycle))


def interleaved(thunks, first_s, *, rounds, round_s, budget_s):
    """Seconds per call of every thunk ({name: thunk}), one sample per round, rounds
    interleaved. A sample is the mean over back-to-back calls lasting about round_s (the
    count comes from first_s[name], the time of its warm-up call). A thunk is not sampled
    again once one more sample would take its total past budget_s; it keeps at least one.
    Returns {name: [seconds per call, one per round it ran in]}."""
    calls = {k: min(MAX_CALLS_PER_SAMPLE, max(1, int(round_s / max(first_s[k], 1e-9))))
             for k in thunks}
    samples = {k: [] for k in thunks}
    spent = dict.fromkeys(thunks, 0.0)
    for _ in range(rounds):
        for name, thunk in thunks.items():
            next_sample = calls[name] * statistics.median(samples[name] or [0.0])
            if samples[name] and spent[name] + next_sample > budget_s:
                continue
            start = clock()
            for _ in range(calls[name]):
                thunk()
            took = clock() - start
            spent[name] += took
            samples[name].append(took / calls[name])
    return samples
