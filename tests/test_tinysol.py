"""TinySOL: reading through mirdata, path safety, and download from a local mirror."""

from __future__ import annotations

import io
import json
import socket
import tarfile
from pathlib import Path

import pytest
from mirdata import core, download_utils
from mirdata.datasets import tinysol as md_tinysol
from tinysol_fixture import (
    Mirror,
    make_tinysol,
    md5_bytes,
    pack_tinysol,
    read_csv_rows,
    write_csv,
)

from fslcli.datasets import mirdata_index
from fslcli.datasets.mirdata_index import index_path
from fslcli.datasets.tinysol import read_tinysol
from fslcli.datasets.tinysol_download import download_tinysol
from fslcli.errors import DataError, DownloadError

ZENODO = "https://zenodo.org/record/3685367/files"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def tracks(home: Path):
    return make_tinysol(home)


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return pack_tinysol_from_fresh(tmp_path_factory.mktemp("src"))


def pack_tinysol_from_fresh(root: Path, top_folder: str | None = None) -> dict[str, bytes]:
    make_tinysol(root)
    return pack_tinysol(root, top_folder)


def use_checksums(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> None:
    """Point mirdata's TinySOL remotes at checksums of the fixture files (URLs unchanged)."""
    sums = {name: md5_bytes(data) for name, data in files.items()}
    monkeypatch.setitem(
        md_tinysol.REMOTES,
        "audio",
        download_utils.RemoteFileMetadata(
            "TinySOL.tar.gz", f"{ZENODO}/TinySOL.tar.gz?download=1", sums["TinySOL.tar.gz"], "audio"
        ),
    )
    monkeypatch.setitem(
        md_tinysol.REMOTES,
        "annotations",
        download_utils.RemoteFileMetadata(
            "TinySOL_metadata.csv",
            f"{ZENODO}/TinySOL_metadata.csv?download=1",
            sums["TinySOL_metadata.csv"],
            "annotation",
        ),
    )
    monkeypatch.setitem(
        md_tinysol.INDEXES,
        "6.0",
        core.Index(
            "tinysol_index_6.0.json",
            url=f"{ZENODO}/tinysol_index_6.0.json?download=1",
            checksum=sums["tinysol_index_6.0.json"],
        ),
    )


# --------------------------------------------------------------------------- reading


def test_reads_labels_folds_and_pitch_through_mirdata(home, tracks):
    result = read_tinysol(home)

    assert result.skipped == []
    assert [c.path for c in result.clips] == sorted(c.path for c in result.clips)
    by_stem = {c.path.stem: c for c in result.clips}
    assert set(by_stem) == {t.track_id for t in tracks}
    for t in tracks:
        clip = by_stem[t.track_id]
        assert clip.path == home.resolve() / "audio" / t.csv_path
        assert (clip.label, clip.fold, clip.pitch, clip.pitch_id) == (
            t.label,
            t.fold,
            t.pitch,
            t.pitch_id,
        )
        assert (clip.dynamics, clip.family) == (t.dynamics, t.family)
    assert {c.label for c in result.clips} == {"Bass Tuba", "French Horn", "Violin"}


def test_index_is_rebuilt_from_the_csv_when_missing(home, tracks):
    index_path(home).unlink()

    result = read_tinysol(home)

    assert len(result.clips) == len(tracks)
    index = json.loads(index_path(home).read_text())
    entry = index["tracks"][tracks[0].track_id]["audio"]
    assert entry[0] == f"audio/{tracks[0].csv_path}"
    assert len(entry[1]) == 32  # md5, mirdata's format


@pytest.mark.parametrize(
    ("setup", "says"),
    [
        (lambda h: None, "does not exist"),
        (lambda h: h.mkdir(), "is empty"),
        (lambda h: (h / "audio").mkdir(parents=True), "TinySOL_metadata.csv"),
    ],
    ids=["missing", "empty", "no-csv"],
)
def test_unusable_home_names_the_download_command(home, setup, says):
    setup(home)
    with pytest.raises(DataError, match=says) as err:
        read_tinysol(home)
    assert f"fsl download tinysol --data-home {home.resolve()}" in str(err.value)
    assert "fsl download tinysol-gm" in str(err.value)


def test_listed_but_missing_file_is_skipped(home, tracks):
    gone = home / "audio" / tracks[0].csv_path
    gone.unlink()

    result = read_tinysol(home)

    assert len(result.clips) == len(tracks) - 1
    assert [(p, r) for p, r in result.skipped] == [(gone.resolve(), "listed in the index but missing")]


def test_track_without_csv_row_is_skipped(home, tracks):
    rows = read_csv_rows(home)
    write_csv(home, [r for r in rows if tracks[1].track_id not in r[0]])

    result = read_tinysol(home)

    assert len(result.clips) == len(tracks) - 1
    ((path, reason),) = result.skipped
    assert path.stem == tracks[1].track_id and "no row" in reason


def test_escaping_csv_paths_are_skipped_and_never_opened(home, tracks, tmp_path, monkeypatch):
    decoy = tmp_path / "decoy.wav"
    decoy.write_bytes(b"secret")
    rows = read_csv_rows(home)
    evil = list(rows[0])
    rows.append(["../../decoy.wav", *evil[1:]])
    rows.append([str(decoy), *evil[1:]])
    write_csv(home, rows)
    index_path(home).unlink()
    hashed: list[Path] = []
    real_md5 = mirdata_index.md5sum
    monkeypatch.setattr(mirdata_index, "md5sum", lambda p: hashed.append(Path(p)) or real_md5(p))

    result = read_tinysol(home)

    assert decoy not in {c.path for c in result.clips}
    assert all(Path(p).resolve() != decoy for p in hashed)
    assert len(hashed) == len(tracks)
    reasons = [r for p, r in result.skipped]
    assert len(reasons) == 2 and all("outside the data home" in r for r in reasons)
    assert "decoy" not in index_path(home).read_text()


def test_escaping_index_paths_are_skipped(home, tracks, tmp_path):
    decoy = tmp_path / "decoy.wav"
    decoy.write_bytes(b"secret")
    link = home / "audio" / "Brass" / "link.wav"
    link.symlink_to(decoy)
    index = json.loads(index_path(home).read_text())
    for tid, rel in [("up", "../decoy.wav"), ("abs", str(decoy)), ("link", "audio/Brass/link.wav")]:
        index["tracks"][tid] = {"audio": [rel, "0" * 32]}
    index_path(home).write_text(json.dumps(index))
    # CSV rows for them, so only the path check can keep them out
    rows = read_csv_rows(home)
    write_csv(home, rows + [[f"x/{tid}.wav", *rows[0][1:]] for tid in ("up", "abs", "link")])

    result = read_tinysol(home)

    assert len(result.clips) == len(tracks)
    assert decoy not in {c.path.resolve() for c in result.clips}
    assert len(result.skipped) == 3
    assert all("outside the data home" in r for _, r in result.skipped)


def test_damaged_index_is_a_data_error(home, tracks):
    index_path(home).write_text("{not json")
    with pytest.raises(DataError, match="Delete it to rebuild"):
        read_tinysol(home)


# --------------------------------------------------------------------------- downloading


@pytest.mark.parametrize("top_folder", [None, "TinySOL"])
def test_download_from_mirror_is_readable_and_second_call_skips(tmp_path, home, monkeypatch, top_folder):
    files = pack_tinysol_from_fresh(tmp_path / "src", top_folder)
    use_checksums(monkeypatch, files)
    seen: list[tuple[str, int, int | None]] = []
    with Mirror(files) as mirror:
        report = download_tinysol(home, base_url=mirror.url, progress=lambda *a: seen.append(a))
        n_requests = len(mirror.requests)
        again = download_tinysol(home, base_url=mirror.url)
        assert len(mirror.requests) == n_requests

    assert sorted(report.downloaded) == sorted(files)
    assert report.skipped == [] and again.downloaded == []
    assert sorted(again.skipped) == sorted(files)
    assert ("TinySOL.tar.gz", len(files["TinySOL.tar.gz"]), len(files["TinySOL.tar.gz"])) in seen
    assert len(read_tinysol(home).clips) == 9
    assert (home / "audio" / "Brass").is_dir()
    assert not list(home.glob("*.tar.gz*")) and not list(home.rglob("*.part"))


def test_force_downloads_again(home, monkeypatch, packed):
    use_checksums(monkeypatch, packed)
    with Mirror(packed) as mirror:
        download_tinysol(home, base_url=mirror.url)
        report = download_tinysol(home, base_url=mirror.url, force=True)
    assert sorted(report.downloaded) == sorted(packed)
    assert len(read_tinysol(home).clips) == 9


def test_truncated_part_is_resumed_with_range(home, monkeypatch, packed):
    use_checksums(monkeypatch, packed)
    tar = packed["TinySOL.tar.gz"]
    half = len(tar) // 2
    home.mkdir()
    (home / "TinySOL.tar.gz.part").write_bytes(tar[:half])
    with Mirror(packed) as mirror:
        monkeypatch.setenv("FSL_TINYSOL_URL", mirror.url)
        download_tinysol(home)
    assert ("TinySOL.tar.gz", f"bytes={half}-") in mirror.requests
    assert len(read_tinysol(home).clips) == 9


def test_interrupted_transfer_keeps_part_and_next_call_resumes(home, monkeypatch, packed):
    use_checksums(monkeypatch, packed)
    with Mirror(packed, cut={"TinySOL.tar.gz": 1000}) as mirror:
        with pytest.raises(DownloadError, match="run the same command again to resume"):
            download_tinysol(home, base_url=mirror.url)
        assert (home / "TinySOL.tar.gz.part").stat().st_size == 1000
        download_tinysol(home, base_url=mirror.url)
    assert ("TinySOL.tar.gz", "bytes=1000-") in mirror.requests
    assert len(read_tinysol(home).clips) == 9


def test_server_ignoring_range_restarts_the_download(home, monkeypatch, packed):
    use_checksums(monkeypatch, packed)
    home.mkdir()
    (home / "TinySOL.tar.gz.part").write_bytes(b"garbage that is not the start of the file")
    with Mirror(packed, honour_range=False) as mirror:
        download_tinysol(home, base_url=mirror.url)
    assert len(read_tinysol(home).clips) == 9


def test_md5_mismatch_deletes_the_download(home, monkeypatch, packed):
    use_checksums(monkeypatch, packed)
    bad = dict(packed, **{"TinySOL_metadata.csv": b"Path,Fold\nnot,the,real,file\n"})
    with Mirror(bad) as mirror, pytest.raises(DownloadError, match="md5") as err:
        download_tinysol(home, base_url=mirror.url)
    assert "\n" not in str(err.value)
    csv_file = home / "annotation" / "TinySOL_metadata.csv"
    assert not csv_file.exists() and not csv_file.with_name(csv_file.name + ".part").exists()


def test_offline_error_points_to_the_soundfont_set(home, monkeypatch, packed):
    use_checksums(monkeypatch, packed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as err:
        download_tinysol(home, base_url=f"http://127.0.0.1:{port}/files")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("Could not reach 127.0.0.1")
    assert "fsl download tinysol-gm" in message


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buf.getvalue()


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


@pytest.mark.parametrize(
    "member",
    [_file("../../escaped.wav"), _file("/tmp/abs.wav"), _symlink("Brass/x.wav", "/etc/passwd")],
    ids=["dotdot", "absolute", "symlink"],
)
def test_unsafe_archive_member_is_refused(home, monkeypatch, packed, member):
    files = dict(packed, **{"TinySOL.tar.gz": _tar_with(member, b"evil")})
    use_checksums(monkeypatch, files)
    with Mirror(files) as mirror, pytest.raises(DownloadError, match="unsafe entry"):
        download_tinysol(home, base_url=mirror.url)
    assert not (home / "audio").exists()
    assert not list(home.parent.rglob("escaped.wav"))


def test_default_urls_are_mirdatas_zenodo_urls(home, monkeypatch):
    from urllib.error import URLError

    from fslcli.datasets import tinysol_download

    monkeypatch.delenv("FSL_TINYSOL_URL", raising=False)
    asked: list[str] = []

    def no_network(request, timeout):
        asked.append(request.full_url)
        raise URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(tinysol_download, "urlopen", no_network)
    with pytest.raises(DownloadError, match=r"^Could not reach Zenodo \(https://zenodo\.org/"):
        download_tinysol(home)
    assert asked == [md_tinysol.INDEXES["6.0"].remote.url]


@pytest.mark.parametrize("rows", [[], [["Brass/x.wav", "not-a-fold"]]], ids=["header-only", "bad-fold"])
def test_unparseable_csv_is_a_data_error(home, tracks, rows):
    write_csv(home, rows)
    with pytest.raises(DataError, match="Cannot parse .*TinySOL_metadata.csv"):
        read_tinysol(home)
