"""The one way an episode is scored: support and queries into the comparison space, class
prototypes (Snell et al., 2017), logits. Evaluation, validation, ``predict``, the episode plot
and detection all call :func:`compare`; :func:`score_episodes` runs it over many episodes at once
on stored embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from fslcli.episodes import Episode
from fslcli.model import ProtoNet, prototypes

#: Episodes compared at once (bounds the (E, dim, dim) whitening factors of support-adapted episodes).
CHUNK = 100


class Compared(NamedTuple):
    """Episodes in the comparison space: ``logits`` ``(..., n_query, ways)``, ``prototypes``
    ``(..., ways, dim)``, ``support`` ``(..., n_support, dim)``, ``query`` ``(..., n_query, dim)``."""

    logits: torch.Tensor
    prototypes: torch.Tensor
    support: torch.Tensor
    query: torch.Tensor


@torch.no_grad()
def compare(net: ProtoNet, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> Compared:
    """Backbone embeddings of one episode or a batch of episodes -> their comparison.

    ``support`` ``(..., n_support, dim)`` with class indices ``labels`` ``(n_support,)`` (any
    number per class), ``query`` ``(..., n_query, dim)``.
    """
    s, q = net.finish_episode(support, query, labels)
    protos = prototypes(s, labels, ways)
    return Compared(net.logits(q, protos), protos, s, q)


@dataclass(frozen=True)
class EpisodeScores:
    """Per-episode results: ``accuracy`` and ``loss`` (mean query cross-entropy) ``(E,)``;
    ``true`` and ``pred`` ``(E, ways * queries)`` class labels."""

    accuracy: np.ndarray
    loss: np.ndarray
    true: list[list[str]]
    pred: list[list[str]]


@torch.no_grad()
def score_episodes(
    net: ProtoNet, emb: torch.Tensor, position: dict[int, int], episodes: Sequence[Episode]
) -> EpisodeScores:
    """Score episodes of one shape on stored backbone embeddings ``emb`` ``(n, dim)``;
    ``position`` maps a clip index to its row of ``emb``."""
    if not episodes:
        return EpisodeScores(np.zeros(0), np.zeros(0), [], [])
    ways, shots = episodes[0].support.shape
    queries = episodes[0].query.shape[1]
    labels = torch.arange(ways).repeat_interleave(shots)
    target = torch.arange(ways).repeat_interleave(queries)
    acc, loss, preds = [], [], []
    for i in range(0, len(episodes), CHUNK):
        chunk = episodes[i : i + CHUNK]
        sup = torch.as_tensor([[position[int(c)] for c in ep.support.reshape(-1)] for ep in chunk])
        qry = torch.as_tensor([[position[int(c)] for c in ep.query.reshape(-1)] for ep in chunk])
        logits = compare(net, emb[sup], labels, emb[qry], ways).logits.float().cpu()  # (E, ways * queries, ways)
        pred = logits.argmax(dim=-1)
        acc.append((pred.numpy() == target.numpy()).mean(axis=1))  # float64, as the mean's CI needs
        loss.append(-torch.log_softmax(logits, dim=-1)[:, torch.arange(len(target)), target].mean(dim=1))
        preds.append(pred)
    pred_all = torch.cat(preds).numpy()
    true_names = [[ep.classes[int(t)] for t in target] for ep in episodes]
    pred_names = [[ep.classes[int(p)] for p in row] for ep, row in zip(episodes, pred_all, strict=True)]
    return EpisodeScores(np.concatenate(acc), torch.cat(loss).numpy(), true_names, pred_names)
