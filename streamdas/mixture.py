"""The classifier's predictions: the network's class probabilities mixed with the neighbour vote.

:class:`~streamdas.DASClassifier` has two experts, its network and its
:class:`~streamdas.neighbours.NeighbourMemory`, weighed by an
:class:`~streamdas.mixing.ExpertMix`: it predicts ``w_net * p_net + w_memory * p_vote``. The
functions here are that mixture, written once for one row, many rows and the most likely
label (which skips the vote where it cannot change the answer), and the scoring of both
experts on a batch before the network learns it. Before the network exists the classifier
predicts the frequencies of the labels it has seen (:func:`label_frequencies`).

>>> import numpy as np
>>> from streamdas.mixing import ExpertMix
>>> from streamdas.neighbours import NeighbourMemory
>>> memory, mix = NeighbourMemory(size=8, n_neighbors=1), ExpertMix(forgetting=0.05)
>>> memory.push(np.array([[0.0], [5.0]], np.float32), np.array([0, 1]))
>>> z, logits = np.array([4.0], np.float32), np.array([2.0, 0.0], np.float32)
>>> mixed_proba(memory, mix, z, softmax(logits)).round(3).tolist()
[0.482, 0.518]
>>> mixed_label(memory, mix, z, logits)  # the vote outweighs the network's lead here
1
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from streamdas.mixing import ExpertMix
from streamdas.neighbours import NeighbourMemory

__all__ = ["label_frequencies", "mixed_label", "mixed_proba", "score_and_keep", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (the mix's log loss reads small probabilities)."""
    logits = logits.astype(np.float64)
    if logits.ndim == 1:
        e = np.exp(logits - logits.max())
        e /= e.sum()
        return e
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def label_frequencies(positions: Iterable[int], n_classes: int) -> np.ndarray:
    """The frequency of each class position among ``positions``; uniform where there is none.

    >>> label_frequencies([2, 0, 2], 3).tolist()
    [0.3333333333333333, 0.0, 0.6666666666666666]
    """
    counts = np.zeros(n_classes)
    for pos in positions:
        counts[pos] += 1.0
    total = counts.sum()
    return counts / total if total else np.full(n_classes, 1.0 / n_classes)


def score_and_keep(
    memory: NeighbourMemory, mix: ExpertMix, logits: np.ndarray, rows: np.ndarray, targets: np.ndarray
) -> None:
    """Score both experts on a batch before the network learns it (the probability each gave
    the true class, as a prediction would have: the network's ``logits`` of the standardized
    ``rows``, the vote of the memory), then keep the batch in the memory."""
    at = np.arange(len(rows))
    net = softmax(logits)[at, targets]
    mix.update(net, memory.vote_many(rows, logits.shape[-1])[at, targets])
    memory.push(rows, targets)


def mixed_proba(memory: NeighbourMemory | None, mix: ExpertMix, z: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The network's class probabilities ``p`` of the standardized row(s) ``z`` (one row, or
    one per row of a 2-d ``z``), mixed in place with the vote where there is a memory holding
    samples."""
    if memory is None or not len(memory):
        return p
    w_net, w_memory = mix.weights
    vote = memory.vote(z, p.shape[-1]) if z.ndim == 1 else memory.vote_many(z, p.shape[-1])
    p *= w_net
    p += w_memory * vote
    return p


def mixed_label(memory: NeighbourMemory | None, mix: ExpertMix, z: np.ndarray, logits: np.ndarray) -> int:
    """The position of the most likely class of the standardized row ``z`` whose network
    outputs are ``logits``: the argmax of :func:`mixed_proba`, computed with as little as the
    answer needs.

    Without a vote, the argmax of the logits. With it, the vote is skipped where it cannot
    change the answer: where the network's weighted lead of its first class over its second,
    ``w_net * (p1 - p2)``, is at least ``w_memory`` (two vote probabilities differ by less than
    1). With two classes the answer is the sign of the mixture's difference of the two
    probabilities, without the probability arrays (ties go to the first class, as argmax's).
    """
    top = int(logits.argmax())
    if memory is None or not len(memory) or len(logits) == 1:
        return top
    w_net, w_memory = mix.weights
    if len(logits) == 2:  # p1 - p2 of a softmax over two logits, without the softmax
        lead = math.tanh((float(logits[0]) - float(logits[1])) / 2.0)
        if w_net * abs(lead) >= w_memory:
            return top
        return 0 if w_net * lead + w_memory * memory.vote_lead(z) >= 0.0 else 1
    p = softmax(logits)
    if w_net * float(p[top] - np.partition(p, len(p) - 2)[-2]) >= w_memory:
        return top
    return int(mixed_proba(memory, mix, z, p).argmax())
