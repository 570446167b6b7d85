"""ProtoNet: the prototypical maths alone, then the network end to end on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fslcli.config import AudioConfig, ModelConfig
from fslcli.model import (
    LOG_FLOOR,
    LogMel,
    ProtoNet,
    mel_filterbank,
    pooled_scatter,
    prototypes,
    squared_euclidean,
    support_adapted_factor,
    warped_filterbanks,
    within_class_whitener,
)

AUDIO = AudioConfig(excerpt_seconds=0.25, n_mels=32)  # 4000 samples -> 32 x 16 log-mel


def tiny(backbone: str = "conv", **kw) -> ProtoNet:
    torch.manual_seed(0)
    return ProtoNet(AUDIO, ModelConfig(backbone=backbone, channels=(4, 8), embedding_dim=16, **kw))


def waves(rng: np.random.Generator, n: int) -> torch.Tensor:
    return torch.from_numpy(0.1 * rng.standard_normal((n, AUDIO.excerpt_samples)).astype(np.float32))


# --- prototypes and distances ----------------------------------------------------------------


def test_prototypes_are_class_means() -> None:
    # 2 ways x 3 shots, class-major, dim 2
    support = torch.tensor([[0.0, 0.0], [2.0, 4.0], [4.0, 2.0], [10.0, 10.0], [12.0, 10.0], [11.0, 13.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert torch.allclose(prototypes(support, labels, ways=2), torch.tensor([[2.0, 2.0], [11.0, 11.0]]))


def test_prototypes_of_uneven_shuffled_labels_are_per_class_means(rng: np.random.Generator) -> None:
    labels = torch.from_numpy(rng.permutation(np.repeat([0, 1, 2, 3], [1, 4, 2, 3])))  # 1 to 4 clips a class
    support = torch.from_numpy(rng.standard_normal((2, len(labels), 5)))  # two episodes at once
    got = prototypes(support, labels, ways=4)
    assert got.shape == (2, 4, 5)
    for k in range(4):
        assert torch.allclose(got[:, k], support[:, labels == k].mean(dim=1))


@pytest.mark.parametrize("batch", [(), (3,)], ids=["one-episode", "batch"])
def test_fast_path_equals_the_general_path(rng: np.random.Generator, batch: tuple[int, ...]) -> None:
    ways, shots = 4, 3
    support = torch.from_numpy(rng.standard_normal((*batch, ways * shots, 6)))
    class_major = torch.arange(ways).repeat_interleave(shots)  # the reshape path
    order = torch.from_numpy(rng.permutation(ways * shots))  # the same clips shuffled: the one-hot path
    fast = prototypes(support, class_major, ways)
    general = prototypes(support[..., order, :], class_major[order], ways)
    assert torch.allclose(fast, general, atol=1e-12)
    assert torch.allclose(fast, support.reshape(*batch, ways, shots, 6).mean(dim=-2))


def test_squared_euclidean_matches_cdist(rng: np.random.Generator) -> None:
    x = torch.from_numpy(rng.standard_normal((7, 5)))
    y = torch.from_numpy(rng.standard_normal((3, 5)))
    d = squared_euclidean(x, y)
    assert d.shape == (7, 3)
    assert torch.allclose(d, torch.cdist(x, y) ** 2, atol=1e-10)
    assert torch.allclose(
        squared_euclidean(torch.tensor([[1.0, 2.0]]), torch.tensor([[4.0, 6.0]])), torch.tensor([[25.0]])
    )


def test_distances_batch_over_episodes(rng: np.random.Generator) -> None:
    x = torch.from_numpy(rng.standard_normal((4, 6, 3)))
    y = torch.from_numpy(rng.standard_normal((4, 2, 3)))
    d = squared_euclidean(x, y)
    assert d.shape == (4, 6, 2)
    assert torch.allclose(d[2], squared_euclidean(x[2], y[2]))


def test_logits_are_minus_squared_distances() -> None:
    query = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    protos = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert ProtoNet.logits(query, protos).tolist() == [[0.0, -9.0], [-25.0, -16.0]]


# --- the network -----------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["conv", "tutorial"])
def test_backbones_embed_each_clip_alone(rng: np.random.Generator, backbone: str) -> None:
    net = tiny(backbone).eval()
    x = waves(rng, 5)
    with torch.no_grad():
        emb = net.embed(x)
        alone = net.embed(x[3:4])
        by_steps = net.encode(net.normalize(net.logmel(x)))
    dim = 8 if backbone == "tutorial" else 16  # the tutorial head is global average pooling
    assert net.dim == dim and emb.shape == (5, dim) and torch.isfinite(emb).all()
    assert torch.allclose(emb[3:4], alone, atol=1e-5)  # in eval mode a clip's embedding ignores its batch
    assert torch.equal(emb, by_steps)  # embed = log-mel, normalise, encode


def test_embed_does_not_change_its_input(rng: np.random.Generator) -> None:
    net = tiny().eval()
    x = waves(rng, 3)
    before = x.clone()
    with torch.no_grad():
        net.embed(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("input_norm", ["band", "none"])
def test_silence_gives_finite_embeddings(input_norm: str) -> None:
    net = tiny(input_norm=input_norm).eval()
    silent = torch.zeros(2, AUDIO.excerpt_samples)
    with torch.no_grad():
        mel = net.logmel(silent)
        emb = net.embed(silent)
    assert torch.allclose(mel, torch.full_like(mel, float(np.log(LOG_FLOOR))))
    assert torch.isfinite(emb).all()


def test_logmel_shape_and_power_option(rng: np.random.Generator) -> None:
    x = waves(rng, 2)
    log_mel = LogMel(AUDIO)(x)
    frames = AUDIO.excerpt_samples // AUDIO.hop_length + 1
    assert log_mel.shape == (2, AUDIO.n_mels, frames)
    power = LogMel(AudioConfig(excerpt_seconds=0.25, n_mels=32, compression="power"))(x)
    assert (power >= 0).all()
    assert torch.allclose(torch.log(power + LOG_FLOOR), log_mel, atol=1e-4)


def tone(freq: float, seconds: float = 0.25, sr: int = 16_000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return torch.sin(2 * torch.pi * freq * t)[None, :]


def test_pitch_warped_filterbanks_read_a_tone_as_if_transposed() -> None:
    logmel = LogMel(AUDIO)
    fb = logmel.mel_basis
    assert torch.allclose(warped_filterbanks(fb, torch.zeros(2)), fb.expand(2, -1, -1))
    x = tone(440.0).repeat(3, 1)
    plain, up, down = logmel(x, torch.tensor([0.0, 12.0, -12.0]))
    assert torch.allclose(plain, logmel(tone(440.0))[0], atol=1e-5)
    # An octave up, 440 Hz is read where 880 Hz is; an octave down, where 220 Hz is.
    peak = lambda m: int(m.mean(-1).argmax())  # noqa: E731
    assert peak(up) == peak(logmel(tone(880.0))[0]) > peak(plain)
    assert peak(down) == peak(logmel(tone(220.0))[0]) < peak(plain)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backbone", "vgg"),
        ("backbone", "resnet"),  # retired
        ("input_norm", "layer"),
        ("input_norm", "clip"),  # retired
        ("embedding_norm", "l2"),  # retired
        ("embedding_norm", "centered-l2"),  # retired
    ],
)
def test_unknown_options_are_refused_with_the_choices(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"{field} '{value}': choose one of"):
        ProtoNet(AUDIO, ModelConfig(**{field: value}))


def test_unknown_compression_is_refused() -> None:
    with pytest.raises(ValueError, match="compression 'mu-law': choose one of log, power"):
        ProtoNet(AudioConfig(compression="mu-law"), ModelConfig())


@pytest.mark.parametrize("backbone", ["conv", "tutorial"])
def test_pool_before_relu_is_the_textbook_block(rng: np.random.Generator, backbone: str) -> None:
    # The blocks pool before the ReLU for speed; the textbook order (ReLU, then pool) must give
    # the same numbers, so the change is an optimisation and not a different model.
    from torch import nn

    from fslcli.model import BNBlock, ConvBlock

    torch.manual_seed(0)
    x = torch.from_numpy(rng.standard_normal((3, 2, 9, 13)).astype(np.float32))
    block = (BNBlock if backbone == "conv" else ConvBlock)(2, 4).eval()
    conv, norm = block.net[0], block.net[1]
    textbook = nn.MaxPool2d(2, ceil_mode=True)(torch.relu(norm(conv(x))))
    assert torch.equal(block(x), textbook)


# --- the comparison space --------------------------------------------------------------------


def clustered(rng: np.random.Generator, spread: tuple[float, ...], n_per_class: int, means: np.ndarray):
    """``len(means)`` classes of ``n_per_class`` points, each class's spread per axis ``spread``."""
    x = np.concatenate([m + rng.standard_normal((n_per_class, len(spread))) * spread for m in means])
    y = np.repeat(np.arange(len(means)), n_per_class)
    return torch.from_numpy(x), torch.from_numpy(y)


def test_within_class_whitener_gives_identity_within_class_covariance(rng: np.random.Generator) -> None:
    means = rng.standard_normal((3, 4)) * 10
    x, y = clustered(rng, (5.0, 0.2, 1.0, 3.0), 400, means)
    # correlated spread, not only along the axes
    x = x @ torch.from_numpy(np.linalg.qr(rng.standard_normal((4, 4)))[0])
    w = within_class_whitener(x, y, shrinkage=0.0)
    assert torch.allclose(w, w.T)
    z = x @ w
    resid = z - torch.stack([z[y == k].mean(0) for k in range(3)])[y]
    assert torch.allclose(resid.T @ resid / len(z), torch.eye(4, dtype=z.dtype), atol=1e-8)


def test_full_shrinkage_only_scales_and_no_spread_gives_identity(rng: np.random.Generator) -> None:
    x, y = clustered(rng, (5.0, 0.2, 1.0), 50, rng.standard_normal((2, 3)))
    w = within_class_whitener(x, y, shrinkage=1.0)
    assert torch.allclose(w, w[0, 0] * torch.eye(3, dtype=w.dtype))
    points = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 0.0]])
    assert torch.equal(within_class_whitener(points, torch.tensor([0, 0, 1]), 0.2), torch.eye(2))


def test_whitening_discounts_the_direction_a_class_varies_in(rng: np.random.Generator) -> None:
    # Two classes 1 apart along x; each varies 25x more along y (a nuisance such as pitch).
    # 1-shot episodes: raw distances are dominated by y, whitened ones are not.
    means = np.array([[0.0, 0.0], [1.0, 0.0]])
    x, y = clustered(rng, (0.2, 5.0), 500, means)
    w = within_class_whitener(x, y, shrinkage=0.0)
    shots = torch.stack([torch.from_numpy(rng.integers(0, 500, 200)), torch.from_numpy(rng.integers(500, 1000, 200))])

    def accuracy(z: torch.Tensor) -> float:
        """Mean over 200 episodes (one random example per class) of nearest-example accuracy."""
        pred = (-squared_euclidean(z.unsqueeze(0), z[shots.T])).argmax(-1)  # (episodes, points)
        return float((pred == y).double().mean())

    raw, white = accuracy(x), accuracy(x @ w)
    assert raw < 0.7
    assert white > 0.9


def test_whitened_embeddings_are_calibrated_on_training_clips(rng: np.random.Generator) -> None:
    net = tiny()  # the default embedding_norm
    assert net.config.embedding_norm == "whitened"
    emb = torch.from_numpy(rng.standard_normal((40, net.dim)).astype(np.float32)) * 2 + 3.0
    labels = torch.arange(4).repeat_interleave(10)
    assert torch.equal(net.whitener, torch.eye(net.dim))  # until calibrated
    net.calibrate(emb, labels)
    assert torch.allclose(net.center, emb.mean(0))
    unit = F.normalize(emb.double() - emb.double().mean(0), dim=-1)
    expected = within_class_whitener(unit, labels, net.config.whiten_shrinkage)
    assert torch.allclose(net.whitener, expected.float())
    out = net.finish(emb)
    assert torch.allclose(out.norm(dim=-1), torch.ones(40), atol=1e-6)
    assert torch.allclose(out, F.normalize(unit.float() @ net.whitener, dim=-1), atol=1e-6)
    # both are part of the saved state, so a model file reproduces them
    assert {"center", "whitener"} <= set(net.state_dict())


def test_embeddings_compared_as_they_come(rng: np.random.Generator) -> None:
    net = tiny(embedding_norm="none")
    emb = torch.from_numpy(rng.standard_normal((4, 16)).astype(np.float32)) * 3
    net.calibrate(emb, torch.tensor([0, 0, 1, 1]))  # nothing to fit
    assert torch.equal(net.finish(emb), emb)
    s, q = net.finish_episode(emb[:2], emb[2:], torch.tensor([0, 1]))
    assert torch.equal(s, emb[:2]) and torch.equal(q, emb[2:])
    assert not {"center", "whitener"} & set(net.state_dict())


def test_pooled_scatter_is_the_unbiased_within_class_covariance(rng: np.random.Generator) -> None:
    x = torch.from_numpy(rng.standard_normal((2, 9, 3)))  # two episodes, 3 classes x 3 shots
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    cov, dof = pooled_scatter(x, labels)
    assert dof == 6 and cov.shape == (2, 3, 3)
    for e in range(2):
        resid = torch.cat([x[e, labels == k] - x[e, labels == k].mean(0) for k in range(3)])
        assert torch.allclose(cov[e], resid.T @ resid / 6)
    # one clip per class: no within-class spread to measure
    single, dof = pooled_scatter(x[:, :3], torch.arange(3))
    assert dof == 0 and not single.any()


def test_support_adapted_factor_mixes_the_support_covariance(rng: np.random.Generator) -> None:
    train_cov = torch.eye(3, dtype=torch.float64) * 2.0
    support = torch.from_numpy(rng.standard_normal((6, 3)))
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    factor = support_adapted_factor(train_cov, support, labels, 0.25)
    scatter, _ = pooled_scatter(support, labels)
    assert torch.allclose(factor @ factor.T, 0.75 * train_cov + 0.25 * scatter)
    assert torch.equal(factor, torch.tril(factor))
    assert support_adapted_factor(train_cov, support[[0, 3]], torch.tensor([0, 1]), 0.25) is None  # 1-shot


def test_support_adaptation_discounts_a_direction_only_the_new_classes_vary_in(rng: np.random.Generator) -> None:
    # Training classes vary little in every direction, so the training whitening is isotropic.
    # Two new classes are 1 apart along x and vary 10x more along y: only their own support
    # set shows it. 5-shot episodes, with and without mixing in the support covariance.
    train_cov = torch.eye(2, dtype=torch.float64) * 0.04
    means = np.array([[0.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0] * 5 + [1] * 5)

    def accuracy(weight: float) -> float:
        hits = []
        for _ in range(200):
            x, y = clustered(rng, (0.2, 2.0), 20, means)
            support = torch.cat([x[:5], x[20:25]])
            query, target = torch.cat([x[5:20], x[25:]]), torch.cat([y[5:20], y[25:]])
            factor = support_adapted_factor(train_cov, support, labels, weight) if weight else torch.eye(2).double()
            s, q = (torch.linalg.solve_triangular(factor, z.T, upper=False).T for z in (support, query))
            pred = (-squared_euclidean(q, prototypes(s, labels, 2))).argmax(-1)
            hits.append(float((pred == target).double().mean()))
        return float(np.mean(hits))

    assert accuracy(0.0) < 0.8
    assert accuracy(0.5) > 0.9


def test_finish_episode_adapts_only_with_a_weight_and_several_shots(rng: np.random.Generator) -> None:
    emb = torch.from_numpy(rng.standard_normal((60, 16)).astype(np.float32)) * 2 + 1.0
    net = tiny(support_cov_weight=0.5)
    net.calibrate(emb, torch.arange(6).repeat_interleave(10))
    support, query = emb[:10].reshape(1, 10, 16), emb[10:25].reshape(1, 15, 16)
    five_shot = torch.arange(2).repeat_interleave(5)
    s, q = net.finish_episode(support, query, five_shot)
    assert s.shape == support.shape and q.shape == query.shape
    assert torch.allclose(s.norm(dim=-1), torch.ones(1, 10), atol=1e-5)
    # the same inner products as the symmetric inverse square root of the mixed covariance
    unit = F.normalize(emb.double() - net.center.double(), dim=-1)
    scatter, _ = pooled_scatter(unit[:10], five_shot)
    evals, evecs = torch.linalg.eigh(0.5 * net.train_covariance() + 0.5 * scatter)
    w = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    expected = F.normalize(unit[:25] @ w, dim=-1)
    got = torch.cat([s[0], q[0]]).double()
    assert torch.allclose(got @ got.T, expected @ expected.T, atol=1e-5)
    # 1-shot (no class with two clips), or weight 0: exactly finish()
    s1, q1 = net.finish_episode(emb[:2], emb[2:5], torch.arange(2))
    assert torch.equal(s1, net.finish(emb[:2])) and torch.equal(q1, net.finish(emb[2:5]))
    net.config = ModelConfig(**{**net.config.__dict__, "support_cov_weight": 0.0})
    s0, _ = net.finish_episode(support, query, five_shot)
    assert torch.equal(s0, net.finish(support))


def test_train_covariance_is_what_the_whitener_inverts(rng: np.random.Generator) -> None:
    net = tiny()
    emb = torch.from_numpy(rng.standard_normal((60, 16)).astype(np.float32))
    labels = torch.arange(6).repeat_interleave(10)
    net.calibrate(emb, labels)
    unit = F.normalize(emb.double() - emb.double().mean(0), dim=-1)
    cov, dof = pooled_scatter(unit, labels)
    assert dof == 54
    cov = cov * dof / 60  # within_class_whitener divides the scatter by n
    lam = net.config.whiten_shrinkage
    shrunk = (1 - lam) * cov + lam * torch.trace(cov) / 16 * torch.eye(16, dtype=torch.float64)
    assert torch.allclose(net.train_covariance(), shrunk, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("weight", [-0.1, 1.0])
def test_support_cov_weight_outside_0_to_1_is_refused(weight: float) -> None:
    with pytest.raises(ValueError, match=f"support_cov_weight {weight}"):
        tiny(support_cov_weight=weight)


@pytest.mark.parametrize("shrinkage", [-0.1, 1.5])
def test_whiten_shrinkage_outside_0_to_1_is_refused(shrinkage: float) -> None:
    with pytest.raises(ValueError, match=f"whiten_shrinkage {shrinkage}"):
        tiny(whiten_shrinkage=shrinkage)


def test_eval_folds_batchnorm_into_the_convolutions_without_changing_the_function() -> None:
    torch.manual_seed(0)
    net = ProtoNet(AudioConfig(excerpt_seconds=0.25, n_mels=32), ModelConfig(channels=(4, 8), embedding_dim=16))
    waves = torch.randn(6, 4000)
    net.train()
    net.embed(waves)  # BatchNorm statistics away from their initial values

    def unfolded() -> torch.Tensor:
        h = net.body(net.normalize(net.logmel(waves)).contiguous(memory_format=torch.channels_last))
        return net.head(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))

    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net.embed(waves), unfolded(), rtol=1e-5, atol=1e-6)
        net.body[0].net[0].weight.mul_(2.0)  # new weights: the folded body is rebuilt
        torch.testing.assert_close(net.embed(waves), unfolded(), rtol=1e-5, atol=1e-6)


def test_the_mel_filterbank_is_librosas_and_kept_after_its_first_use(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import librosa

    monkeypatch.setenv("FSL_CACHE_DIR", str(tmp_path))
    audio = AudioConfig(n_mels=40)
    fb = mel_filterbank(audio)
    assert np.array_equal(fb, librosa.filters.mel(sr=16_000, n_fft=1024, n_mels=40))
    assert fb.shape == (40, 513) and fb.dtype == np.float32
    (kept,) = tmp_path.glob("melfb-16000-1024-40-librosa*.npy")

    def no_librosa(*args, **kwargs):
        raise AssertionError("librosa computed it again")

    monkeypatch.setattr(librosa.filters, "mel", no_librosa)
    assert np.array_equal(mel_filterbank(audio), fb)  # read back: no librosa.filters import at start-up
    kept.write_bytes(b"damaged")
    monkeypatch.undo()
    monkeypatch.setenv("FSL_CACHE_DIR", str(tmp_path))
    assert np.array_equal(mel_filterbank(audio), fb)  # a damaged file is computed again
