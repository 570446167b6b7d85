"""Design-choice study on held-out *training* classes (never the test instruments).

Each variant trains on 6 of the 9 default training instruments and is scored on the other 3
(3-way episodes, 1,000 of them, 5-shot and 1-shot). ``--fold`` picks which 3 are held out
(fold 0: Cello, Oboe, Trombone; see FOLDS); running every fold averages over the choice of
classes as well as the seed. Test instruments are not read at all, so choosing defaults from
this table does not tune to the test set.
Meant for a GPU (each variant ~30 s there); on a CPU use --steps to shorten.

    python benchmarks/explore.py --data-home ~/mir_datasets/tinysol-gm --accelerator cuda --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from fslcli.config import DEFAULT_TRAIN_CLASSES, AugmentConfig, EpisodeConfig, RunConfig, SplitConfig
from fslcli.datasets import DataSource
from fslcli.evaluation import VAL_STREAM
from fslcli.training import fit
from fslcli.workflows import device_for, prepare

#: Three disjoint triples of the default training instruments; each fold holds one out.
FOLDS: tuple[tuple[str, ...], ...] = (
    ("Cello", "Oboe", "Trombone"),
    ("Violin", "Clarinet in Bb", "French Horn"),
    ("Contrabass", "Flute", "Accordion"),
)
HELD_OUT = FOLDS[0]


def variants(base: RunConfig) -> dict[str, RunConfig]:
    a, m, t, au = base.audio, base.model, base.train, base.augment
    return {
        "default": base,
        # The study's baseline when it was run (results/explore-h200-*.json call it "default"):
        # 5-way training episodes, the episode shape of the tutorial.
        "5-way": replace(base, train=replace(t, train_ways=5)),
        "no-eq-shift": replace(base, augment=replace(au, eq_db=0.0, max_shift_bins=0)),
        "no-aug": replace(
            base,
            augment=AugmentConfig(
                random_crop=True, gain_db=0.0, spec_time_masks=0, spec_freq_masks=0, eq_db=0.0, max_shift_bins=0
            ),
        ),
        "shift4": replace(base, augment=replace(au, max_shift_bins=4)),
        "clip-norm": replace(base, model=replace(m, input_norm="clip")),
        "cosine": replace(base, model=replace(m, distance="cosine")),
        "train-ways-6": replace(base, train=replace(t, train_ways=6)),
        "mels-128": replace(base, audio=replace(a, n_mels=128)),
        "wide": replace(base, model=replace(m, channels=(64, 128, 256, 512))),
        "steps-x2": replace(base, train=replace(t, steps=2 * t.steps)),
        "ways6+clip": replace(base, train=replace(t, train_ways=6), model=replace(m, input_norm="clip")),
        "ways6+clip+no-eq": replace(
            base,
            train=replace(t, train_ways=6),
            model=replace(m, input_norm="clip"),
            augment=replace(au, eq_db=0.0, max_shift_bins=0),
        ),
        # Second round: an auxiliary classifier over all training classes, cheaper steps,
        # regularisation, longer excerpts.
        "class-0.3": replace(base, train=replace(t, class_loss_weight=0.3)),
        "class-1": replace(base, train=replace(t, class_loss_weight=1.0)),
        "class-3": replace(base, train=replace(t, class_loss_weight=3.0)),
        "class-10": replace(base, train=replace(t, class_loss_weight=10.0)),
        # Adam is nearly invariant to the loss scale, so this is close to a plain classifier.
        "class-100": replace(base, train=replace(t, class_loss_weight=100.0)),
        "class-3+queries-10": replace(base, train=replace(t, class_loss_weight=3.0, train_queries=10)),
        "class-3+queries-5": replace(base, train=replace(t, class_loss_weight=3.0, train_queries=5)),
        "class-10+queries-10": replace(base, train=replace(t, class_loss_weight=10.0, train_queries=10)),
        "class-3+emb-128": replace(base, train=replace(t, class_loss_weight=3.0), model=replace(m, embedding_dim=128)),
        "class-3+excerpt-1.5s": replace(
            base, train=replace(t, class_loss_weight=3.0), audio=replace(a, excerpt_seconds=1.5)
        ),
        "queries-10": replace(base, train=replace(t, train_queries=10)),
        # Third round: configurations of about equal CPU cost (steps x clips per step), all with
        # the auxiliary classifier.
        "class-3+queries-5+steps-1500": replace(
            base, train=replace(t, class_loss_weight=3.0, train_queries=5, steps=3 * t.steps // 2)
        ),
        "class-3+queries-5+steps-2000": replace(
            base, train=replace(t, class_loss_weight=3.0, train_queries=5, steps=2 * t.steps)
        ),
        "class-3+steps-800": replace(base, train=replace(t, class_loss_weight=3.0, steps=4 * t.steps // 5)),
        "class-1+queries-5+steps-2000": replace(
            base, train=replace(t, class_loss_weight=1.0, train_queries=5, steps=2 * t.steps)
        ),
        "class-1+queries-10": replace(base, train=replace(t, class_loss_weight=1.0, train_queries=10)),
        "wd-0.05": replace(base, train=replace(t, weight_decay=0.05)),
        "lr-3e-3": replace(base, train=replace(t, learning_rate=3e-3)),
        "no-shift": replace(base, augment=replace(au, max_shift_bins=0)),
        "excerpt-1.5s": replace(base, audio=replace(a, excerpt_seconds=1.5)),
        "emb-128": replace(base, model=replace(m, embedding_dim=128)),
        # Fourth round: keep where in the spectrum a pattern sits (mean/max over time only),
        # and dropout before the projection.
        "time-pool": replace(base, model=replace(m, pooling="time")),
        "time-pool+class-3": replace(base, model=replace(m, pooling="time"), train=replace(t, class_loss_weight=3.0)),
        "time-pool+dropout-0.3": replace(base, model=replace(m, pooling="time", dropout=0.3)),
        "dropout-0.3": replace(base, model=replace(m, dropout=0.3)),
        # Fifth round: training length (1.5x still fits the CPU budget), learning rate, augmentation.
        "steps-1500": replace(base, train=replace(t, steps=3 * t.steps // 2)),
        "lr-5e-4": replace(base, train=replace(t, learning_rate=5e-4)),
        "no-specaug": replace(base, augment=replace(au, spec_time_masks=0, spec_freq_masks=0)),
        # Sixth round: log-spaced bands (a resampled note's pattern moves by whole bands as its
        # pitch changes), at the default FFT size and at twice it (finer low-frequency bins).
        "log-bands": replace(base, audio=replace(a, frequency_scale="log")),
        "log-bands+nfft-2048": replace(base, audio=replace(a, frequency_scale="log", n_fft=2048)),
        "nfft-2048": replace(base, audio=replace(a, n_fft=2048)),
        # Seventh round (CPU): training excerpts start near the clip's onset, as evaluation's do.
        "onset-crop-0.25": replace(base, augment=replace(au, onset_crop_seconds=0.25)),
        "onset-crop-0.5": replace(base, augment=replace(au, onset_crop_seconds=0.5)),
        # Eighth round (CPU): validate and keep a moving average of the weights.
        "ema-0.99": replace(base, train=replace(t, ema_decay=0.99)),
        "ema-0.995": replace(base, train=replace(t, ema_decay=0.995)),
        # Ninth round (CPU): an ensemble of two backbones trained side by side, for half the steps
        # (less CPU time than the default) and for all of them, since held-out-class accuracy
        # levels off after a few hundred steps.
        "members-2+half-steps": replace(base, model=replace(m, members=2), train=replace(t, steps=t.steps // 2)),
        "members-2": replace(base, model=replace(m, members=2)),
    }


#: Evaluation-time transforms of the backbone's embeddings (no retraining): as the backbone outputs
#: them, L2-normalised, centred on all training clips' mean embedding then L2-normalised
#: (SimpleShot's CL2N), and what the model itself does (``ProtoNet.finish``, its embedding_norm).
EMBEDDING_TRANSFORMS = ("raw", "l2", "cl2", "model")


def transform(emb, center, kind: str):
    import torch.nn.functional as F

    if kind == "l2":
        return F.normalize(emb, dim=-1)
    if kind == "cl2":
        return F.normalize(emb - center, dim=-1)
    return emb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-home", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--fold", type=int, default=0, choices=range(len(FOLDS)), help="which triple is held out")
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--precision", default="32")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/fsl-explore"))
    ap.add_argument("--out", type=Path, default=Path("explore.json"))
    args = ap.parse_args()
    from fslcli.episodes import draw_episodes
    from fslcli.evaluation import embed_cached, score_episodes

    held_out = FOLDS[args.fold]
    train = tuple(c for c in DEFAULT_TRAIN_CLASSES if c not in held_out)
    base = RunConfig(
        split=SplitConfig(train_classes=train, val_classes=held_out, test_classes=()),
        train=replace(
            RunConfig().train, steps=args.steps, seed=args.seed, accelerator=args.accelerator, precision=args.precision
        ),
    )
    source = DataSource("tinysol-gm", args.data_home)
    results = {}
    wanted = [v for v in args.only.split(",") if v]
    unknown = set(wanted) - set(variants(base))
    if unknown:
        raise SystemExit(f"unknown variants: {sorted(unknown)}")
    for name, cfg in variants(base).items():
        if wanted and name not in wanted:
            continue
        prep = prepare(source, cfg.split, cfg.audio.sample_rate, None)
        run_dir = args.work_dir / f"{name}-seed{args.seed}-fold{args.fold}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "history.jsonl").unlink(missing_ok=True)
        t0 = time.perf_counter()
        res = fit(cfg, prep.cache, prep.pools.train, prep.pools.val, source, run_dir)
        secs = time.perf_counter() - t0
        from fslcli.checkpoint import load_model

        device = device_for()
        net = load_model(res.model_path).net.to(device)
        row = {
            "seed": args.seed,
            "fold": args.fold,
            "train_seconds": round(secs, 1),
            "best_val_acc_during_training": res.best_val_acc,
        }
        train_ids = sorted(int(i) for ids in prep.pools.train.values() for i in ids)
        for windows in (1, 3):
            center = embed_cached(net, prep.cache, train_ids, windows, device=device, finish=False).mean(dim=0)
            for shots in (5, 1):
                episodes = draw_episodes(prep.pools.val, EpisodeConfig(3, shots, 15), 1000, 123, VAL_STREAM + 50)
                ids = sorted({int(i) for ep in episodes for i in list(ep.support.ravel()) + list(ep.query.ravel())})
                emb = embed_cached(net, prep.cache, ids, windows, device=device, finish=False)
                for kind in EMBEDDING_TRANSFORMS:
                    e = net.finish(emb) if kind == "model" else transform(emb, center, kind)
                    acc = score_episodes(net, e, {c: k for k, c in enumerate(ids)}, episodes).accuracy
                    row[f"w{windows}-{kind}-{shots}shot"] = round(float(acc.mean()), 4)
        results[name] = row
        print(f"{name:14s} {row}", flush=True)
        args.out.write_text(json.dumps(results, indent=1))


def support_centred_accuracy(emb, position: dict[int, int], episodes) -> float:
    """Mean accuracy when each episode centres its embeddings on its own support mean
    (inductive: only the labelled support set), then L2-normalises them."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from fslcli.model import prototypes, squared_euclidean

    ways, queries = episodes[0].support.shape[0], episodes[0].query.shape[1]
    sup = torch.as_tensor([[position[int(i)] for i in ep.support.reshape(-1)] for ep in episodes])
    qry = torch.as_tensor([[position[int(i)] for i in ep.query.reshape(-1)] for ep in episodes])
    s, q = emb[sup], emb[qry]  # (E, ways * shots, dim), (E, ways * queries, dim)
    c = s.mean(dim=1, keepdim=True)
    s, q = F.normalize(s - c, dim=-1), F.normalize(q - c, dim=-1)
    pred = (-squared_euclidean(q, prototypes(s, ways))).argmax(-1).numpy()
    return float((pred == np.repeat(np.arange(ways), queries)[None, :]).mean())


#: Evaluation-time options that ``rescore`` compares: (label, windows per clip, ``eval_shifts``:
#: embeddings averaged over the log-mel shifted by -k..k bands, ``eval_pitch_shifts``: and over
#: the spectrum warped by these semitones).
RESCORE_OPTIONS: tuple[tuple[str, int, int, tuple[int, ...]], ...] = (
    ("w1", 1, 0, ()),
    ("w3", 3, 0, ()),
    ("w1-shift1", 1, 1, ()),
    ("w1-shift2", 1, 2, ()),
    ("w1-shift3", 1, 3, ()),
    ("w3-shift2", 3, 2, ()),
    ("w1-shift2-pitch4", 1, 2, (-4, 4)),
    ("w1-shift2-pitch48", 1, 2, (-8, -4, 4, 8)),
    ("w1-shift2-pitch2468", 1, 2, (-8, -6, -4, -2, 2, 4, 6, 8)),
)


@contextmanager
def shift_averaged(net, k: int, semitones: tuple[int, ...] = ()):
    """Within the block, ``net`` embeds with ``eval_shifts`` = ``k`` and ``eval_pitch_shifts`` =
    ``semitones``."""
    saved = net.config
    net.config = replace(saved, eval_shifts=k, eval_pitch_shifts=semitones)
    try:
        yield
    finally:
        net.config = saved


#: Weights of the support set's own within-class covariance (``support_cov_weight``) that
#: ``rescore`` compares, with whitening at shrinkage 0.2.
RESCORE_SUPPORT_WEIGHTS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5)


def whitened_net(net, center, whitener, support_cov_weight: float = 0.0):
    """A copy of ``net`` that compares "whitened" embeddings with the given centre and whitening
    matrix (and ``support_cov_weight``), whatever ``net`` was trained with: scoring its backbone
    embeddings with ``score_episodes(..., finished=False)`` runs fslcli's own code path."""
    from fslcli.model import ProtoNet

    config = replace(net.config, embedding_norm="whitened", support_cov_weight=support_cov_weight)
    white = ProtoNet(net.audio, config)
    white.load_state_dict({**net.state_dict(), "center": center, "whitener": whitener})
    return white.eval()


#: Shrinkages of the within-class covariance that ``rescore`` compares for "whitened" embeddings.
RESCORE_SHRINKAGES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)


def rescore(run_dirs: list[Path], data_home: Path, options: tuple[str, ...] = ()) -> None:
    """Score trained study runs under more evaluation-time options (windows per clip; centring
    on the training mean or on each episode's support mean; whitening by the training classes'
    within-class covariance); paired comparisons."""
    import numpy as np
    import torch

    from fslcli.checkpoint import load_model
    from fslcli.episodes import draw_episodes
    from fslcli.evaluation import embed_cached, score_episodes
    from fslcli.model import within_class_whitener

    source = DataSource("tinysol-gm", data_home)
    table: dict[str, dict[str, float]] = {}
    # Per (windows, shots): each run's centred, unit-length embeddings, for the ensemble row.
    members: dict[tuple[int, int], list] = {}
    for run in run_dirs:
        loaded = load_model(run / "model.pt")
        net, cfg = loaded.net, loaded.config
        prep = prepare(source, cfg.split, cfg.audio.sample_rate, None)
        label_of = {int(i): k for k, c in enumerate(sorted(prep.pools.train)) for i in prep.pools.train[c]}
        train_ids = sorted(label_of)
        train_labels = torch.tensor([label_of[i] for i in train_ids])
        row: dict[str, float] = {}
        for label, windows, shifts, semitones in RESCORE_OPTIONS:
            if options and label not in options:
                continue
            with shift_averaged(net, shifts, semitones):
                train_emb = embed_cached(net, prep.cache, train_ids, windows, finish=False)
            center = train_emb.mean(dim=0)
            unit = transform(train_emb, center, "cl2")
            whiteners = {
                str(lam): (center, within_class_whitener(unit, train_labels, lam)) for lam in RESCORE_SHRINKAGES
            }
            # The same from only 20 clips per training class (a seeded subset): how many the estimate needs.
            rng = np.random.default_rng(0)
            few = torch.from_numpy(
                np.concatenate(
                    [
                        rng.choice(
                            np.flatnonzero(train_labels == k), min(20, int((train_labels == k).sum())), replace=False
                        )
                        for k in train_labels.unique()
                    ]
                )
            )
            few_center = train_emb[few].mean(dim=0)
            few_unit = transform(train_emb[few], few_center, "cl2")
            whiteners["0.2-20clips"] = (few_center, within_class_whitener(few_unit, train_labels[few], 0.2))
            for shots in (5, 1):
                episodes = draw_episodes(prep.pools.val, EpisodeConfig(3, shots, 15), 1000, 123, VAL_STREAM + 50)
                ids = sorted({int(i) for ep in episodes for i in list(ep.support.ravel()) + list(ep.query.ravel())})
                pos = {c: k for k, c in enumerate(ids)}
                with shift_averaged(net, shifts, semitones):
                    emb = embed_cached(net, prep.cache, ids, windows, finish=False)
                for kind in ("raw", "cl2"):
                    acc = score_episodes(net, transform(emb, center, kind), pos, episodes).accuracy.mean()
                    row[f"{label}-{kind}-{shots}shot"] = round(float(acc), 4)
                for lam, (c, w) in whiteners.items():
                    acc = score_episodes(whitened_net(net, c, w), emb, pos, episodes, finished=False).accuracy.mean()
                    row[f"{label}-white{lam}-{shots}shot"] = round(float(acc), 4)
                # Whitening adapted to each episode's support set (``support_cov_weight``), 5-shot only.
                if shots > 1:
                    c, w = whiteners["0.2"]
                    for weight in RESCORE_SUPPORT_WEIGHTS:
                        white = whitened_net(net, c, w, weight)
                        acc = score_episodes(white, emb, pos, episodes, finished=False).accuracy.mean()
                        row[f"{label}-white0.2-support{weight}-{shots}shot"] = round(float(acc), 4)
                row[f"{label}-support-cl2-{shots}shot"] = round(support_centred_accuracy(emb, pos, episodes), 4)
                members.setdefault((label, shots), []).append((transform(emb, center, "cl2"), pos, episodes, net))
        table[run.name] = row
        print(run.name, json.dumps(row), flush=True)
    # An ensemble needs its members scored on the same clips (the same held-out fold).
    if len(run_dirs) > 1 and all(p[1] == parts[0][1] for parts in members.values() for p in parts):
        # Concatenated unit-length embeddings: squared distances are the sum of the members'.
        row = {}
        for (label, shots), parts in members.items():
            emb = torch.cat([p[0] for p in parts], dim=1)
            _, pos, episodes, net = parts[0]
            row[f"{label}-cl2-{shots}shot"] = round(float(score_episodes(net, emb, pos, episodes).accuracy.mean()), 4)
        table["ensemble"] = row
        print("ensemble", json.dumps(row), flush=True)
    print_rescore_table(table)


def print_rescore_table(table: dict[str, dict[str, float]]) -> None:
    """One row per option: each run's 5-shot/1-shot accuracy and the mean over single runs
    ("-" where an option has no 1-shot score, such as support-set adaptation)."""

    def cell(r: dict[str, float], key: str) -> str:
        if key + "-5shot" not in r:
            return ""
        one = r.get(key + "-1shot")
        return f"{r[key + '-5shot']:.3f}/" + (f"{one:.3f}" if one is not None else "-")

    keys = sorted({k.rsplit("-", 1)[0] for r in table.values() for k in r}, key=lambda k: (k[1], k))
    print(f"{'option':34s} " + " ".join(f"{n[:22]:>22s}" for n in table) + "   mean of single runs (5-shot/1-shot)")
    singles = [r for name, r in table.items() if name != "ensemble"]
    for k in keys:
        mean = {
            f"{k}-{shots}shot": sum(r[f"{k}-{shots}shot"] for r in singles) / len(singles)
            for shots in (5, 1)
            if all(f"{k}-{shots}shot" in r for r in singles)
        }
        print(f"{k:34s} " + " ".join(f"{cell(r, k):>22s}" for r in table.values()) + f"   {cell(mean, k)}")


def summarise(paths: list[Path]) -> None:
    """Mean over seeds of each variant's held-out accuracy, one line per variant and metric set."""
    import numpy as np

    rows: dict[str, list[dict]] = {}
    for p in paths:
        for name, row in json.loads(p.read_text()).items():
            rows.setdefault(name, []).append(row)
    keys = [f"w{w}-{k}" for w in (1, 3, 5) for k in EMBEDDING_TRANSFORMS]
    keys = [k for k in keys if all(f"{k}-5shot" in r for rs in rows.values() for r in rs)]
    print(f"{'variant':24s} runs " + " ".join(f"{k:>13s}" for k in keys) + "  (5-shot/1-shot, mean over runs)")
    for name, rs in rows.items():
        cells = []
        for k in keys:
            five = np.mean([r[f"{k}-5shot"] for r in rs])
            one = np.mean([r[f"{k}-1shot"] for r in rs])
            cells.append(f"{five:.3f}/{one:.3f}")
        print(f"{name:24s} {len(rs):4d} " + " ".join(f"{c:>13s}" for c in cells))
    # Paired against "default": the same (seed, fold) trained both ways, the model's own embeddings.
    base = {(r["seed"], r.get("fold", 0)): r for r in rows.get("default", [])}
    key = next((k for k in ("w1-model", "w3-model") if k in keys), None)
    if not base or key is None:
        return
    print(f"\npaired difference from default ({key}; mean and standard error over the shared runs)")
    for name, rs in rows.items():
        pairs = [(r, base[(r["seed"], r.get("fold", 0))]) for r in rs if (r["seed"], r.get("fold", 0)) in base]
        if name == "default" or not pairs:
            continue
        cells = []
        for shots in (5, 1):
            d = np.array([r[f"{key}-{shots}shot"] - b[f"{key}-{shots}shot"] for r, b in pairs])
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            cells.append(f"{shots}-shot {d.mean():+.3f} ± {se:.3f}")
        print(f"{name:24s} {len(pairs):4d}   " + "   ".join(cells))


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "summarise":
        summarise([Path(p) for p in sys.argv[2:]])
    elif len(sys.argv) > 1 and sys.argv[1] == "rescore":
        # rescore DATA_HOME RUN_DIR... [--options w1-shift2,...]
        args = sys.argv[2:]
        opts: tuple[str, ...] = ()
        if "--options" in args:
            k = args.index("--options")
            opts = tuple(args[k + 1].split(","))
            args = args[:k] + args[k + 2 :]
        rescore([Path(p) for p in args[1:]], Path(args[0]), opts)
    else:
        main()
