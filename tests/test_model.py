"""ProtoNet: the prototypical maths alone, then the network end to end on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fslcli.config import AudioConfig, ModelConfig
from fslcli.model import (
    LOG_FLOOR,
    LogMel,
    ProtoNet,
    cosine_similarity,
    log_filterbank,
    pitch_shifts_problem,
    pooled_scatter,
    prototypes,
    shift_bands,
    squared_euclidean,
    support_adapted_factor,
    warp_filterbank,
    within_class_whitener,
)

AUDIO = AudioConfig(excerpt_seconds=0.25, n_mels=32)  # 4000 samples -> 32 x 16 log-mel


def tiny(backbone: str = "conv", **kw) -> ProtoNet:
    torch.manual_seed(0)
    return ProtoNet(AUDIO, ModelConfig(backbone=backbone, channels=(4, 8), embedding_dim=16, **kw))


def waves(rng: np.random.Generator, n: int) -> torch.Tensor:
    return torch.from_numpy(0.1 * rng.standard_normal((n, AUDIO.excerpt_samples)).astype(np.float32))


def test_prototypes_are_class_means() -> None:
    # 2 ways x 3 shots, class-major, dim 2
    support = torch.tensor([[0.0, 0.0], [2.0, 4.0], [4.0, 2.0], [10.0, 10.0], [12.0, 10.0], [11.0, 13.0]])
    expected = torch.tensor([[2.0, 2.0], [11.0, 11.0]])
    assert torch.allclose(prototypes(support, ways=2), expected)


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


def test_cosine_similarity_hand_computed() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[2.0, 0.0], [0.0, -3.0]])
    expected = torch.tensor([[1.0, 0.0], [2**-0.5, -(2**-0.5)]])
    assert torch.allclose(cosine_similarity(x, y), expected, atol=1e-6)


@pytest.mark.parametrize("backbone", ["conv", "resnet", "tutorial"])
def test_backbones_forward_shapes(rng: np.random.Generator, backbone: str) -> None:
    net = tiny(backbone).eval()
    ways, shots, n_query = 3, 2, 5
    with torch.no_grad():
        out = net(waves(rng, ways * shots), waves(rng, n_query), ways)
    dim = 8 if backbone == "tutorial" else 16  # the tutorial head is global average pooling
    assert net.dim == dim
    assert out.logits.shape == (n_query, ways)
    assert out.prototypes.shape == (ways, dim)
    assert out.support.shape == (ways * shots, dim)
    assert out.query.shape == (n_query, dim)
    assert torch.isfinite(out.logits).all()
    # Euclidean head: logits are minus squared distances to the class means of the support.
    assert torch.allclose(out.prototypes, out.support.reshape(ways, shots, dim).mean(1), atol=1e-6)
    assert torch.allclose(out.logits, -squared_euclidean(out.query, out.prototypes), atol=1e-4)


def test_forward_does_not_change_inputs(rng: np.random.Generator) -> None:
    net = tiny().eval()
    s, q = waves(rng, 4), waves(rng, 2)
    s0, q0 = s.clone(), q.clone()
    with torch.no_grad():
        net(s, q, 2)
    assert torch.equal(s, s0) and torch.equal(q, q0)


def test_cosine_head_is_scaled_cosine_similarity(rng: np.random.Generator) -> None:
    net = tiny(distance="cosine").eval()
    with torch.no_grad():
        out = net(waves(rng, 4), waves(rng, 3), ways=2)
        expected = net.log_scale.exp() * cosine_similarity(out.query, out.prototypes)
    assert net.log_scale is not None
    assert torch.allclose(out.logits, expected, atol=1e-6)
    assert (out.logits.abs() <= net.log_scale.exp() + 1e-5).all()


@pytest.mark.parametrize("input_norm", ["band", "clip", "none"])
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


def test_clip_norm_is_gain_invariant(rng: np.random.Generator) -> None:
    # Without pitch-shifted views: a view shifted up reads above the Nyquist frequency, and those
    # empty bands sit at the log floor whatever the gain.
    net = tiny(input_norm="clip", eval_pitch_shifts=()).eval()
    x = waves(rng, 3)
    with torch.no_grad():
        a, b = net.embed(x), net.embed(4.0 * x)
    assert torch.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backbone", "vgg"),
        ("distance", "manhattan"),
        ("input_norm", "layer"),
        ("embedding_norm", "l1"),
        ("pooling", "freq"),
    ],
)
def test_unknown_options_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=value):
        ProtoNet(AUDIO, ModelConfig(**{field: value}))


@pytest.mark.parametrize("backbone", ["conv", "resnet", "tutorial"])
def test_ensemble_members_sit_side_by_side(rng: np.random.Generator, backbone: str) -> None:
    single, ensemble = tiny(backbone).eval(), tiny(backbone, members=3).eval()
    assert ensemble.dim == 3 * single.dim and ensemble.member_dim == single.dim
    x = waves(rng, 4)
    with torch.no_grad():
        one, three = single.embed(x), ensemble.embed(x)
    assert three.shape == (4, 3 * single.dim)
    # The first member is built as a single-backbone model from the same seed (whose files load
    # unchanged); the others are initialised independently.
    assert torch.allclose(three[:, : single.dim], one, atol=1e-6)
    first, second, third = three.split(single.dim, dim=1)
    assert not torch.allclose(first, second) and not torch.allclose(second, third)
    with pytest.raises(ValueError, match="members 0"):
        tiny(backbone, members=0)


def test_unknown_frequency_scale_and_bad_dropout_are_refused() -> None:
    with pytest.raises(ValueError, match="bark"):
        LogMel(AudioConfig(frequency_scale="bark"))
    with pytest.raises(ValueError, match="dropout 1.5"):
        ProtoNet(AUDIO, ModelConfig(dropout=1.5))


def test_log_filterbank_rows_are_normalised_and_never_empty() -> None:
    fb = log_filterbank(16_000, 1024, 64, 50.0, 8000.0)
    assert fb.shape == (64, 513)
    assert np.allclose(fb.sum(axis=1), 1.0, atol=1e-5)
    assert ((fb > 0).sum(axis=1) >= 2).all()  # low bands narrower than a bin still see two bins
    centroids = fb @ np.fft.rfftfreq(1024, 1 / 16_000)
    assert (np.diff(centroids) > 0).all()
    with pytest.raises(ValueError, match="f_min"):
        log_filterbank(16_000, 1024, 64, 0.0, 8000.0)


def test_log_bands_move_a_tone_by_whole_bands_as_its_pitch_changes() -> None:
    # Band centres are a constant ratio apart, so multiplying a tone's frequency by that ratio
    # moves its loudest band by exactly one, wherever it is above the FFT's resolution limit.
    audio = AudioConfig(excerpt_seconds=0.5, n_mels=48, n_fft=2048, frequency_scale="log", f_min=100.0)
    front = LogMel(audio)
    ratio = (audio.sample_rate / 2 / audio.f_min) ** (1 / (audio.n_mels + 1))
    t = np.arange(audio.excerpt_samples) / audio.sample_rate
    peaks = []
    for k in range(4):
        tone = np.sin(2 * np.pi * 1000.0 * ratio**k * t).astype(np.float32)
        peaks.append(int(front(torch.from_numpy(tone)[None]).mean(dim=-1).argmax()))
    assert np.diff(peaks).tolist() == [1, 1, 1]


def test_time_pooling_keeps_where_a_pattern_sits_in_frequency() -> None:
    torch.manual_seed(0)
    net = ProtoNet(AUDIO, ModelConfig(channels=(4, 8), embedding_dim=16, pooling="time")).eval()
    # 32 mel bands through two 2x2 pools: 8 bands, mean and max over time for each channel.
    assert net.head.in_features == 2 * 8 * 8
    x = torch.zeros(1, 1, AUDIO.n_mels, 16)
    low, high = x.clone(), x.clone()
    low[..., 2:6, :], high[..., 22:26, :] = 1.0, 1.0
    with torch.no_grad():
        assert not torch.allclose(net.encode(low), net.encode(high))
    with pytest.raises(ValueError, match="no band"):
        ProtoNet(AudioConfig(n_mels=8), ModelConfig(channels=(4, 8, 16, 32), pooling="time"))


def test_dropout_acts_in_training_only(rng: np.random.Generator) -> None:
    net = tiny(dropout=0.5)
    x = waves(rng, 4)
    with torch.no_grad():
        net.train()
        a, b = net.embed(x), net.embed(x)
        net.eval()
        c, d = net.embed(x), net.embed(x)
    assert not torch.allclose(a, b)
    assert torch.equal(c, d)


@pytest.mark.parametrize("backbone", ["conv", "resnet", "tutorial"])
def test_pool_before_relu_is_the_textbook_block(rng: np.random.Generator, backbone: str) -> None:
    # The blocks pool before the ReLU for speed; the textbook order (ReLU, then pool) must give
    # the same numbers, so the change is an optimisation and not a different model.
    from torch import nn

    from fslcli.model import BNBlock, ConvBlock, ResBlock

    torch.manual_seed(0)
    x = torch.from_numpy(rng.standard_normal((3, 2, 9, 13)).astype(np.float32))
    if backbone == "resnet":
        block = ResBlock(2, 4).eval()
        y = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        textbook = block.pool(torch.relu(y + block.short(x)))
    else:
        block = (BNBlock if backbone == "conv" else ConvBlock)(2, 4).eval()
        conv, norm = block.net[0], block.net[1]
        textbook = nn.MaxPool2d(2, ceil_mode=True)(torch.relu(norm(conv(x))))
    assert torch.equal(block(x), textbook)


def test_centered_l2_embeddings_are_unit_length_around_the_center(rng: np.random.Generator) -> None:
    net = tiny(embedding_norm="centered-l2")
    emb = torch.from_numpy(rng.standard_normal((6, net.dim)).astype(np.float32)) + 5.0
    net.calibrate(emb, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert torch.allclose(net.center, emb.mean(0))
    out = net.finish(emb)
    assert torch.allclose(out.norm(dim=-1), torch.ones(6), atol=1e-6)
    assert torch.allclose(out, torch.nn.functional.normalize(emb - emb.mean(0), dim=-1))
    # the centre is part of the saved state, so a model file reproduces it
    assert "center" in net.state_dict() and "whitener" not in net.state_dict()


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
    unit = torch.nn.functional.normalize(emb.double() - emb.double().mean(0), dim=-1)
    expected = within_class_whitener(unit, labels, net.config.whiten_shrinkage)
    assert torch.allclose(net.whitener, expected.float())
    out = net.finish(emb)
    assert torch.allclose(out.norm(dim=-1), torch.ones(40), atol=1e-6)
    assert torch.allclose(out, torch.nn.functional.normalize(unit.float() @ net.whitener, dim=-1), atol=1e-6)
    # both are part of the saved state, so a model file reproduces them
    assert {"center", "whitener"} <= set(net.state_dict())


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
            pred = (-squared_euclidean(q, prototypes(s, 2))).argmax(-1)
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
    unit = torch.nn.functional.normalize(emb.double() - net.center.double(), dim=-1)
    scatter, _ = pooled_scatter(unit[:10], five_shot)
    evals, evecs = torch.linalg.eigh(0.5 * net.train_covariance() + 0.5 * scatter)
    w = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    expected = torch.nn.functional.normalize(unit[:25] @ w, dim=-1)
    got = torch.cat([s[0], q[0]]).double()
    assert torch.allclose(got @ got.T, expected @ expected.T, atol=1e-5)
    assert not torch.allclose(s[0], net.finish(emb[:10]), atol=1e-3)
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
    unit = torch.nn.functional.normalize(emb.double() - emb.double().mean(0), dim=-1)
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


def test_l2_and_none_embedding_norms(rng: np.random.Generator) -> None:
    emb = torch.from_numpy(rng.standard_normal((4, 16)).astype(np.float32)) * 3
    l2 = tiny(embedding_norm="l2")
    assert torch.allclose(l2.finish(emb).norm(dim=-1), torch.ones(4), atol=1e-6)
    assert "center" not in l2.state_dict()
    assert torch.equal(tiny(embedding_norm="none").finish(emb), emb)


def test_shift_bands_moves_each_spectrogram_and_repeats_the_edge() -> None:
    x = torch.arange(5.0).reshape(1, 5, 1).repeat(2, 1, 3)  # (2, 5 bands, 3 frames)
    out = shift_bands(x, torch.tensor([1, -2]))
    assert out[0, :, 0].tolist() == [0, 0, 1, 2, 3]
    assert out[1, :, 0].tolist() == [2, 3, 4, 4, 4]


def test_eval_shifts_average_shifted_embeddings_outside_training(rng: np.random.Generator) -> None:
    net = tiny(eval_shifts=2, eval_pitch_shifts=()).eval()
    x = waves(rng, 3)
    with torch.no_grad():
        mel = net.logmel(x)
        by_shift = [net.encode(net.normalize(shift_bands(mel, torch.full((3,), s)))) for s in range(-2, 3)]
        assert torch.allclose(net.embed(x), torch.stack(by_shift).mean(dim=0), atol=1e-5)
        net.train()
        plain = net.embed(x)
    assert torch.allclose(plain, net.encode(net.normalize(mel)), atol=1e-5)  # training sees each clip once
    with pytest.raises(ValueError, match="eval_shifts 40"):
        ProtoNet(AUDIO, ModelConfig(eval_shifts=40))


def tone(freq: float, seconds: float = 0.25, sr: int = 16_000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return torch.sin(2 * torch.pi * freq * t)[None, :]


def test_warped_filterbank_reads_a_tone_as_one_pitch_shifted() -> None:
    fb = LogMel(AUDIO).mel_basis.numpy()
    assert np.allclose(warp_filterbank(fb, 16_000, AUDIO.n_fft, 0), fb)
    logmel = LogMel(AUDIO)
    plain, up, down = logmel.views(tone(440.0), (12, -12))
    # An octave up, 440 Hz is read where 880 Hz is; an octave down, where 220 Hz is.
    assert up.mean(-1).argmax() == logmel(tone(880.0)).mean(-1).argmax() != plain.mean(-1).argmax()
    assert down.mean(-1).argmax() == logmel(tone(220.0)).mean(-1).argmax()
    assert torch.equal(plain, logmel(tone(440.0)))


def test_pitch_shifts_average_pitch_and_band_shifted_views_outside_training(rng: np.random.Generator) -> None:
    net = tiny(eval_shifts=1, eval_pitch_shifts=(-4, 4)).eval()
    x = waves(rng, 3)
    with torch.no_grad():
        views = [
            net.encode(net.normalize(shift_bands(mel, torch.full((3,), s))))
            for mel in net.logmel.views(x, (-4, 4))
            for s in (-1, 0, 1)
        ]
        assert torch.allclose(net.embed(x), torch.stack(views).mean(dim=0), atol=1e-5)
        net.train()
        assert torch.allclose(net.embed(x), net.encode(net.normalize(net.logmel(x))), atol=1e-5)


@pytest.mark.parametrize("semitones", [(0,), (13,), (-4, 4, -4)])
def test_pitch_shifts_outside_an_octave_zero_or_repeated_are_refused(semitones: tuple[int, ...]) -> None:
    assert pitch_shifts_problem(semitones) is not None
    with pytest.raises(ValueError, match="eval_pitch_shifts"):
        ProtoNet(AUDIO, ModelConfig(eval_pitch_shifts=semitones))
