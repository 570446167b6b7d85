"""Predictions and embedding files for the user's own recordings, of any length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SR, make_tiny_net, synth_tone

from fslcli.embedding import embed_files
from fslcli.errors import DataError, FslError
from fslcli.inference import (
    EMBEDDING_FORMATS,
    calibrate_threshold,
    check_embeddings_path,
    collect_audio,
    predict,
    support_set,
    write_embeddings,
)
from fslcli.scoring import compare


def write(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype="FLOAT" if path.suffix == ".wav" else None)
    return path


def test_collect_audio(tmp_path: Path, rng: np.random.Generator) -> None:
    a = write(tmp_path / "d" / "x" / "b.wav", synth_tone(rng, "Odd", 0.1))
    b = write(tmp_path / "d" / "a.flac", synth_tone(rng, "Odd", 0.1))
    (tmp_path / "d" / "notes.txt").write_text("not audio")
    write(tmp_path / "d" / ".hidden.wav", synth_tone(rng, "Odd", 0.1))
    single = write(tmp_path / "single.wav", synth_tone(rng, "Odd", 0.1))
    assert collect_audio([tmp_path / "d", single]) == [b, a, single]
    with pytest.raises(DataError, match="does not exist"):
        collect_audio([tmp_path / "nope.wav"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        collect_audio([tmp_path / "empty"])


def make_support(root: Path, rng: np.random.Generator, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        for k in range(n):
            write(root / name / f"{k}.wav", synth_tone(rng, name, 0.5))
    return root


def test_predict_with_folder_queries(tmp_path: Path, rng: np.random.Generator, tiny_net) -> None:
    support = make_support(tmp_path / "support", rng, {"Bright": 3, "Dark": 1, "Odd": 2})  # Dark: ONE example
    q = tmp_path / "queries"
    make_support(q, rng, {"Bright": 2, "Dark": 1})
    write(q / "unsorted" / "x.wav", synth_tone(rng, "Odd", 0.5))  # not a support class: no true class
    loose = write(tmp_path / "loose.wav", synth_tone(rng, "Noisy", 0.3))
    res = predict(tiny_net, support, [q, loose], top_k=3)
    assert res.classes == ["Bright", "Dark", "Odd"]
    assert res.threshold is None and res.skipped == []
    by_path = {p.path: p for p in res.predictions}
    assert len(by_path) == 5
    truth = {
        q / "Bright" / "0.wav": "Bright",
        q / "Bright" / "1.wav": "Bright",
        q / "Dark" / "0.wav": "Dark",
        q / "unsorted" / "x.wav": None,
        loose: None,
    }
    assert {p: pred.true_class for p, pred in by_path.items()} == truth
    for pred in res.predictions:
        assert pred.predicted in res.classes
        assert [c for c, _ in pred.top_k][0] == pred.predicted and len(pred.top_k) == 3
        assert sum(prob for _, prob in pred.top_k) == pytest.approx(1.0, abs=1e-5)
        assert pred.probability >= pred.runner_up_probability
        assert pred.runner_up != pred.predicted and pred.distance >= 0


@pytest.mark.parametrize("windows", [1, "all"])
def test_predict_scores_as_compare_does(tmp_path: Path, rng: np.random.Generator, windows: int | str) -> None:
    # A whitened model calibrated on other clips; uneven support (3, 1 and 2 files), so the
    # prototypes come from uneven class blocks and the space adapts to the support set.
    net = make_tiny_net(excerpt_seconds=0.1)
    net.calibrate(torch.from_numpy(rng.standard_normal((30, net.dim)).astype(np.float32)), torch.arange(30) % 3)
    support = make_support(tmp_path / "support", rng, {"Bright": 3, "Dark": 1, "Odd": 2})
    queries = make_support(tmp_path / "queries", rng, {"Bright": 1, "Dark": 1, "Odd": 1, "Noisy": 1})
    res = predict(net, support, [queries], top_k=3, reject=True, windows=windows)
    files, labels = support_set(support)
    sup = embed_files(net, files, windows=windows)
    qry = embed_files(net, collect_audio([queries]), windows=windows)
    classes = sorted(set(labels))
    by_hand = compare(
        net,
        torch.from_numpy(sup.embeddings),
        torch.as_tensor([classes.index(c) for c in labels]),
        torch.from_numpy(qry.embeddings),
        len(classes),
    )
    probs = torch.softmax(by_hand.logits, dim=-1)
    assert [p.path for p in res.predictions] == qry.paths
    for row, pred in enumerate(res.predictions):
        assert dict(pred.top_k) == pytest.approx({c: float(probs[row, k]) for k, c in enumerate(classes)}, abs=1e-5)
        assert pred.distance == pytest.approx(float(-by_hand.logits[row].max()), rel=1e-4)
    # the rejection threshold is calibrated in the same comparison space
    assert res.threshold == pytest.approx(calibrate_threshold(by_hand.support, labels), rel=1e-4)


def test_support_needs_two_classes(tmp_path: Path, rng: np.random.Generator, tiny_net) -> None:
    support = make_support(tmp_path / "support", rng, {"Bright": 2})
    with pytest.raises(DataError, match="at least 2 class subfolders"):
        predict(tiny_net, support, [support])
    with pytest.raises(DataError, match="is not a folder"):
        support_set(tmp_path / "missing")


def test_calibrate_threshold_hand_computed() -> None:
    # class a at 0, 1, 5 (leave-one-out prototypes 3, 2.5, 0.5); b has one example and is skipped.
    emb = torch.tensor([[0.0], [1.0], [5.0], [100.0]])
    thr = calibrate_threshold(emb, ["a", "a", "a", "b"])
    assert thr == pytest.approx(max(3.0**2, 2.5**2, 4.5**2))
    with pytest.raises(DataError, match="at least 2 support recordings"):
        calibrate_threshold(emb[:2], ["a", "b"])


def level_and_brightness_net():
    """A model whose embedding is (10 x RMS level, 100 x zero-crossing rate): tones and noise sit far apart."""
    net = make_tiny_net(embedding_norm="none")

    def embed(waves: torch.Tensor) -> torch.Tensor:
        rms = waves.pow(2).mean(1).sqrt()
        zcr = (torch.sign(waves[:, 1:]) != torch.sign(waves[:, :-1])).float().mean(1)
        return torch.stack([10 * rms, 100 * zcr], dim=1)

    net.embed = embed
    net.finish = lambda emb: emb  # compared as computed
    net.dim = 2
    return net


def tone(freq: float, amp: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_reject_marks_a_far_query_unknown(tmp_path: Path, rng: np.random.Generator) -> None:
    net = level_and_brightness_net()
    support = tmp_path / "support"
    for k, amp in enumerate([0.3, 0.4, 0.5]):
        write(support / "low" / f"{k}.wav", tone(220, amp))
        write(support / "high" / f"{k}.wav", tone(1760, amp))
    near = write(tmp_path / "q" / "near.wav", tone(220, 0.4))
    far = write(tmp_path / "q" / "far.wav", (0.4 * rng.uniform(-1, 1, SR // 2)).astype(np.float32))
    plain = predict(net, support, [near, far])
    assert {p.path.name: p.predicted for p in plain.predictions} == {"near.wav": "low", "far.wav": "high"}
    res = predict(net, support, [near, far], reject=True)
    assert res.threshold is not None and 0 < res.threshold < 10
    got = {p.path.name: p for p in res.predictions}
    assert got["near.wav"].predicted == "low" and got["near.wav"].distance <= res.threshold
    assert got["far.wav"].predicted == "unknown" and got["far.wav"].distance > 100 * res.threshold


@pytest.mark.parametrize("suffix", EMBEDDING_FORMATS)
def test_write_embeddings_reads_back(tmp_path: Path, rng: np.random.Generator, suffix: str) -> None:
    emb = rng.standard_normal((3, 4)).astype(np.float32)
    paths, labels = ["a/x.wav", "b/y [1].wav", "Скрипка/ноты.ogg"], ["a", "b", "Скрипка"]
    out = tmp_path / f"emb{suffix}"
    write_embeddings(out, emb, paths, labels)
    if suffix == ".npz":
        with np.load(out, allow_pickle=False) as z:  # strings, no object arrays
            got, got_paths, got_labels = z["embeddings"], z["paths"].tolist(), z["labels"].tolist()
    elif suffix == ".csv":
        import csv

        with open(out, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["path", "label", "e0", "e1", "e2", "e3"]
        got_paths, got_labels = [r[0] for r in rows[1:]], [r[1] for r in rows[1:]]
        got = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        table = pq.read_table(out).to_pydict()
        got_paths, got_labels = table.pop("path"), table.pop("label")
        got = np.stack([np.asarray(table[f"e{k}"]) for k in range(4)], axis=1)
    assert got_paths == paths and got_labels == labels
    np.testing.assert_allclose(got, emb, rtol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # written in place, nothing left beside it


def test_unknown_embedding_format_is_refused_before_any_work(tmp_path: Path) -> None:
    for bad in (tmp_path / "emb.txt", tmp_path / "emb"):
        with pytest.raises(FslError, match=r"unknown format .*use .npz, .csv, .parquet"):
            check_embeddings_path(bad)
    with pytest.raises(FslError, match="unknown format .json"):
        write_embeddings(tmp_path / "e.json", np.zeros((1, 2), np.float32), ["a"], ["b"])
    assert not any(tmp_path.iterdir())
