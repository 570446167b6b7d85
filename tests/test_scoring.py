"""The one scoring path: compare an episode in the comparison space, score many on stored embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_net

from fslcli.config import EpisodeConfig
from fslcli.episodes import TEST_STREAM, Episode, draw_episodes, make_pool
from fslcli.model import prototypes, squared_euclidean
from fslcli.scoring import CHUNK, compare, score_episodes

CLASSES = "ABCDE"


def separable(rng: np.random.Generator, labels: list[str], dim: int = 16) -> torch.Tensor:
    """Each class a tight cluster around its own distant corner."""
    names = sorted(set(labels))
    centres = {c: 10.0 * np.eye(dim)[k] + 3.0 for k, c in enumerate(names)}
    return torch.from_numpy(
        np.stack([centres[lab] + 0.1 * rng.standard_normal(dim) for lab in labels]).astype(np.float32)
    )


def calibrated_net(emb: torch.Tensor, labels: list[str], **model: object):
    """A tiny whitened net calibrated on ``emb``, as training leaves it."""
    net = make_tiny_net(**model)
    net.calibrate(emb, torch.as_tensor([CLASSES.index(c) for c in labels]))
    return net


@pytest.fixture
def labels() -> list[str]:
    return [c for c in CLASSES for _ in range(8)]


@pytest.mark.parametrize("embedding_norm", ["whitened", "none"])
def test_perfectly_separable_embeddings_score_one(rng: np.random.Generator, labels, embedding_norm: str) -> None:
    emb = separable(rng, labels)
    net = calibrated_net(emb, labels, embedding_norm=embedding_norm)
    episodes = draw_episodes(make_pool(labels), EpisodeConfig(4, 2, 3), 20, seed=0, stream=TEST_STREAM)
    scores = score_episodes(net, emb, {i: i for i in range(len(labels))}, episodes)
    assert scores.accuracy.shape == scores.loss.shape == (20,)
    assert (scores.accuracy == 1.0).all()
    assert (scores.loss < np.log(4)).all()  # more confident than a uniform guess over 4 classes
    assert scores.true == scores.pred
    assert all(len(row) == 4 * 3 for row in scores.true)


def test_compare_separable_embeddings_puts_each_query_nearest_its_class(rng: np.random.Generator, labels) -> None:
    emb = separable(rng, labels)
    net = calibrated_net(emb, labels)
    # 3 support clips of A, 1 of B, 2 of C, not class-major (as predict's folders may give them)
    support_idx = [0, 8, 1, 16, 2, 17]
    support_labels = torch.tensor([0, 1, 0, 2, 0, 2])
    query_idx = [5, 12, 20, 6]
    got = compare(net, emb[support_idx], support_labels, emb[query_idx], ways=3)
    assert got.logits.argmax(-1).tolist() == [0, 1, 2, 0]
    # the record holds what the logits were computed from: finished clips, their class means
    assert got.support.shape == (6, net.dim) and got.query.shape == (4, net.dim)
    assert torch.allclose(got.prototypes, prototypes(got.support, support_labels, 3))
    assert torch.allclose(got.logits, -squared_euclidean(got.query, got.prototypes))
    assert torch.allclose(got.support.norm(dim=-1), torch.ones(6), atol=1e-5)  # whitened to unit length


def test_compare_does_not_change_its_inputs(rng: np.random.Generator, labels) -> None:
    emb = separable(rng, labels)
    net = calibrated_net(emb, labels, support_cov_weight=0.5)
    support, query = emb[:10].clone(), emb[10:20].clone()
    compare(net, support, torch.arange(2).repeat_interleave(5), query, 2)
    assert torch.equal(support, emb[:10]) and torch.equal(query, emb[10:20])


def test_compare_of_a_batch_equals_compare_of_each_episode(rng: np.random.Generator, labels) -> None:
    emb = torch.from_numpy(rng.standard_normal((len(labels), 16)).astype(np.float32))
    net = calibrated_net(emb, labels, support_cov_weight=0.5)  # each episode adapts to its own support set
    episodes = draw_episodes(make_pool(labels), EpisodeConfig(3, 3, 2), 6, seed=2, stream=TEST_STREAM)
    sup = emb[torch.as_tensor(np.stack([ep.support.reshape(-1) for ep in episodes]))]
    qry = emb[torch.as_tensor(np.stack([ep.query.reshape(-1) for ep in episodes]))]
    support_labels = torch.arange(3).repeat_interleave(3)
    batch = compare(net, sup, support_labels, qry, 3)
    assert batch.logits.shape == (6, 6, 3)
    for e in range(6):
        alone = compare(net, sup[e], support_labels, qry[e], 3)
        for got, expected in zip(batch, alone, strict=True):
            assert torch.allclose(got[e], expected, atol=1e-5)


def test_scoring_a_batch_equals_scoring_each_episode_alone(rng: np.random.Generator, labels) -> None:
    emb = torch.from_numpy(rng.standard_normal((len(labels), 16)).astype(np.float32))
    emb += 2.0 * torch.eye(16)[[CLASSES.index(c) for c in labels]]
    net = calibrated_net(emb, labels, support_cov_weight=0.5)
    position = {i: i for i in range(len(labels))}
    for shots in (3, 1):  # adapted to the support set, and not
        episodes = draw_episodes(make_pool(labels), EpisodeConfig(3, shots, 4), CHUNK + 30, seed=1, stream=TEST_STREAM)
        together = score_episodes(net, emb, position, episodes)  # more than one chunk
        alone = [score_episodes(net, emb, position, [ep]) for ep in episodes]
        np.testing.assert_allclose(together.accuracy, [a.accuracy[0] for a in alone])
        np.testing.assert_allclose(together.loss, [a.loss[0] for a in alone], rtol=1e-5)
        assert together.pred == [a.pred[0] for a in alone] and together.true == [a.true[0] for a in alone]
        # and each episode is scored as compare() scores it
        ep = episodes[-1]
        direct = compare(
            net, emb[ep.support.reshape(-1)], torch.arange(3).repeat_interleave(shots), emb[ep.query.reshape(-1)], 3
        )
        assert together.pred[-1] == [ep.classes[int(k)] for k in direct.logits.argmax(-1)]


def test_score_episodes_hand_computed() -> None:
    # Embeddings compared as they come, on one axis: support A at 0, B at 10; queries A at 1 and
    # 9 (nearer B: wrong), B at 10.5 and 6.
    net = make_tiny_net(embedding_norm="none")
    values = {0: 0.0, 1: 10.0, 2: 1.0, 3: 9.0, 4: 10.5, 5: 6.0}
    emb = torch.zeros(6, net.dim)
    for i, v in values.items():
        emb[i, 0] = v
    ep = Episode(classes=("A", "B"), support=np.array([[0], [1]]), query=np.array([[2, 3], [4, 5]]))
    scores = score_episodes(net, emb, {i: i for i in range(6)}, [ep])
    assert scores.accuracy.tolist() == [0.75]
    assert scores.true == [["A", "A", "B", "B"]]
    assert scores.pred == [["A", "B", "B", "B"]]
    logits = -torch.tensor([[1.0, 81.0], [81.0, 1.0], [110.25, 0.25], [36.0, 16.0]])
    expected = -torch.log_softmax(logits, dim=-1)[torch.arange(4), torch.tensor([0, 0, 1, 1])].mean()
    assert scores.loss[0] == pytest.approx(float(expected), rel=1e-6)


def test_score_episodes_uses_the_position_map() -> None:
    net = make_tiny_net(embedding_norm="none")
    emb = torch.zeros(4, net.dim)
    emb[:, 0] = torch.tensor([10.0, 0.0, 9.0, 1.0])  # rows for clips 40, 10, 41, 11
    position = {40: 0, 10: 1, 41: 2, 11: 3}
    ep = Episode(classes=("low", "high"), support=np.array([[10], [40]]), query=np.array([[11], [41]]))
    assert score_episodes(net, emb, position, [ep]).accuracy.tolist() == [1.0]


def test_score_no_episodes(tiny_net) -> None:
    scores = score_episodes(tiny_net, torch.zeros(0, 2), {}, [])
    assert scores.accuracy.size == 0 and scores.true == []
