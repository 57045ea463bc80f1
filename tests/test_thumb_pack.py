"""Thumbnail packs: what the eval processes write while judging (one pack per process), and how reports,
rebuilds and `merge` read them."""

from __future__ import annotations

import base64
import io
import multiprocessing
import os
import re
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("jinja2")

from lora_harness.report import thumbs  # noqa: E402
from lora_harness.report.build import report_run  # noqa: E402
from lora_harness.report.html import ReportOptions  # noqa: E402
from lora_harness.report.thumb_pack import PACK_SUFFIX, read_pack, read_packs, record  # noqa: E402
from report_rows import sweep_rows, write_store  # noqa: E402


def _pixels(seed: int, shape=(64, 48, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _write_pack(run_dir: Path, worker: str, cases: list[tuple[str, Path, np.ndarray]], max_px: int = 32) -> Path:
    writer = thumbs.ThumbnailWriter.for_run(run_dir, max_px, run_id="run1", worker=worker)
    for key, image, pixels in cases:
        writer.submit(key, image, pixels)
    writer.close()
    return writer.pack


def _pack_from_a_process(run_dir: str, worker: str, keys: list[str], image: str) -> None:
    """Runs in a spawned process: one eval worker writing its pack."""
    _write_pack(Path(run_dir), worker, [(key, Path(image), _pixels(i)) for i, key in enumerate(keys)])


def test_the_writer_packs_in_the_background_and_close_waits_for_all(tmp_path: Path) -> None:
    writer = thumbs.ThumbnailWriter.for_run(tmp_path / "run", 32, run_id="run1", worker="gw0", batch=2)
    image = tmp_path / "source.png"
    image.write_bytes(b"")  # the thumbnail's freshness is judged against its image's time
    keys = [f"case-{i}" for i in range(7)]
    for i, key in enumerate(keys):
        writer.submit(key, image, _pixels(i))
    writer.submit("case-bad", image, np.zeros((0, 0, 3), dtype=np.uint8))  # cannot encode: skipped
    assert any(t.name == "lora-harness-thumbnails" for t in threading.enumerate())
    writer.close()
    assert not any(t.name == "lora-harness-thumbnails" for t in threading.enumerate())
    assert writer.pack == tmp_path / "run" / "thumbs" / "32" / f"run1.gw0{PACK_SUFFIX}"
    assert [p.name for p in writer.pack.parent.iterdir()] == [writer.pack.name]  # one file, not one per case
    entries, problem = read_pack(writer.pack)
    assert problem is None and set(entries) == {thumbs.thumbnail_name(k) for k in keys}
    for i, key in enumerate(keys):
        data = entries[thumbs.thumbnail_name(key)].read()
        assert data == thumbs.jpeg_from_pixels(_pixels(i), 32)
        with Image.open(io.BytesIO(data)) as thumb:
            assert thumb.format == "JPEG" and thumb.size == (24, 32)  # (width, height) of a 64 x 48 (h x w) image
    writer.submit("case-again", image, _pixels(9))  # usable after close: appends to the same pack
    writer.close()
    assert thumbs.thumbnail_name("case-again") in read_pack(writer.pack)[0]


def test_two_processes_write_their_own_packs_and_a_reader_sees_both(tmp_path: Path) -> None:
    run_dir, image = tmp_path / "run", tmp_path / "a.png"
    image.write_bytes(b"")
    keys = {"gw0": [f"a-{i}" for i in range(5)], "gw1": [f"b-{i}" for i in range(5)]}
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_pack_from_a_process, args=(str(run_dir), w, k, str(image))) for w, k in keys.items()]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    folder = thumbs.thumbs_dir(run_dir, 32)
    assert sorted(p.name for p in folder.iterdir()) == [f"run1.gw0{PACK_SUFFIX}", f"run1.gw1{PACK_SUFFIX}"]
    packed = read_packs(folder)
    for worker_keys in keys.values():
        for i, key in enumerate(worker_keys):
            assert packed[thumbs.thumbnail_name(key)].read() == thumbs.jpeg_from_pixels(_pixels(i), 32)


def test_a_torn_tail_is_ignored_with_a_warning_and_the_report_makes_that_thumbnail_again(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rows = sweep_rows(tmp_path)
    write_store(run_dir, rows)
    images = {row.case_key: Path(row.image) for row in rows}
    cases = [(key, path, np.asarray(Image.open(path).convert("RGB"))) for key, path in images.items()]
    pack = _write_pack(run_dir, "main", cases)
    whole = pack.read_bytes()
    pack.write_bytes(whole[:-10])  # killed mid-write: the last record is cut short
    entries, problem = read_pack(pack)
    assert len(entries) == len(cases) - 1 and "torn last record" in problem and str(pack) in problem
    last = thumbs.thumbnail_name(cases[-1][0])
    assert last not in entries
    with pytest.warns(UserWarning, match="torn last record"):
        made = thumbs.build_thumbnails(images.items(), run_dir, 32, processes=0)
    assert made[cases[-1][0]].packed is None and made[cases[-1][0]].path.is_file()  # made from its image
    assert all(made[key].packed is not None for key, _, _ in cases[:-1])
    assert made[cases[-1][0]].jpeg() == whole[-len(made[cases[-1][0]].jpeg()):]  # the same bytes as packed

    pack.write_bytes(whole + b"garbage that is no record at all")
    entries, problem = read_pack(pack)
    assert len(entries) == len(cases) and "not a thumbnail record" in problem


def _data_uris(html: str) -> list[bytes]:
    return [base64.b64decode(u) for u in re.findall(r'data:image/jpeg;base64,([A-Za-z0-9+/=]+)', html)]


def test_a_report_from_packs_is_the_report_from_thumbnail_files(tmp_path: Path, monkeypatch) -> None:
    rows = sweep_rows(tmp_path)
    cold, packed = tmp_path / "cold", tmp_path / "packed"
    write_store(cold, rows)
    write_store(packed, rows)
    images = {row.case_key: Path(row.image) for row in rows}
    _write_pack(packed, "gw0", [(k, p, np.asarray(Image.open(p).convert("RGB"))) for k, p in images.items()][:6])
    _write_pack(packed, "gw1", [(k, p, np.asarray(Image.open(p).convert("RGB"))) for k, p in images.items()][6:])
    options = ReportOptions(images="embed", thumbnail_px=32)
    cold_html = report_run(cold, options=options).html.read_text()

    def no_decode(*args: object) -> None:
        raise AssertionError("a packed thumbnail was made again from its image")

    monkeypatch.setattr(thumbs, "_make", no_decode)
    html = report_run(packed, options=options).html.read_text()
    assert len(_data_uris(html)) == 12 and _data_uris(html) == _data_uris(cold_html)  # the same JPEG bytes
    assert not list(thumbs.thumbs_dir(packed, 32).glob("*.jpg"))  # embedded straight from the packs

    linked = report_run(packed, options=ReportOptions(images="link", thumbnail_px=32)).html.read_text()
    links = re.findall(r'src="(thumbs/32/[^"]+)"', linked)
    assert len(links) == 12
    for link in links:  # written out of the packs, where link mode points
        name = Path(link).name
        assert (packed / link).read_bytes() == (cold / "thumbs" / "32" / name).read_bytes()


def test_a_rerun_keeps_fresh_packed_thumbnails_and_remakes_stale_ones(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    run_dir = tmp_path / "run"
    first = thumbs.ThumbnailWriter.for_run(run_dir, 32, run_id="run1", worker="main")
    first.submit("case-a", image, _pixels(1))
    first.submit("case-b", image, _pixels(2))
    first.close()
    image.write_bytes(b"changed")  # newer than the packed thumbnails
    old = read_packs(thumbs.thumbs_dir(run_dir, 32))
    stamp = old[thumbs.thumbnail_name("case-a")].made_ns
    os.utime(image, ns=(stamp - 1, stamp - 1))  # case-a's thumbnail is not older than its image again
    second = thumbs.ThumbnailWriter.for_run(run_dir, 32, run_id="run2", worker="main")
    second.submit("case-a", image, _pixels(1))
    second.close()
    assert not second.pack.exists()  # nothing to add
    os.utime(image, ns=(stamp + 10**9, stamp + 10**9))  # now the image is newer: made again, with its pixels
    third = thumbs.ThumbnailWriter.for_run(run_dir, 32, run_id="run3", worker="main")
    third.submit("case-a", image, _pixels(3))
    third.close()
    newest = read_packs(thumbs.thumbs_dir(run_dir, 32))[thumbs.thumbnail_name("case-a")]
    assert newest.pack == third.pack and newest.read() == thumbs.jpeg_from_pixels(_pixels(3), 32)


def test_merge_copies_packs_so_the_merged_report_shows_images_from_another_machine(tmp_path: Path) -> None:
    from lora_harness.report.manifest import RunManifest, SessionRecord, write_manifest
    from lora_harness.report.merge import merge_runs

    rows = sweep_rows(tmp_path)
    shard = tmp_path / "shard"
    write_store(shard, rows)
    write_manifest(shard, RunManifest(run_name="sweep", config_hash="h", judges={"llm": ["2"]},
                                      sessions=[SessionRecord(run_id="run1", config_hash="h", started_at="2026-01-01T00:00:00")]))
    images = {row.case_key: Path(row.image) for row in rows}
    _write_pack(shard, "gw0", [(k, p, np.asarray(Image.open(p).convert("RGB"))) for k, p in images.items()], max_px=64)
    expected = {thumbs.thumbnail_name(k): thumbs.jpeg_from_pixels(np.asarray(Image.open(p).convert("RGB")), 64)
                for k, p in images.items()}
    shutil.rmtree(tmp_path / "images")  # the originals are on the other machine
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact pack reads without a warning
        result = merge_runs([shard], tmp_path / "merged", options=ReportOptions(thumbnail_px=64))
    assert (tmp_path / "merged" / "thumbs" / "64" / f"run1.gw0{PACK_SUFFIX}").is_file()
    assert sorted(_data_uris(result.report.html.read_text())) == sorted(expected.values())


def test_a_record_is_its_header_name_and_bytes() -> None:
    data = record("x.jpg", b"\xff\xd8\xff\xd9", 7)
    assert data[:4] == b"LHT1" and data.endswith(b"x.jpg\xff\xd8\xff\xd9") and len(data) == 18 + 5 + 4


def test_a_failed_append_is_cut_off_so_later_records_stay_readable(tmp_path: Path) -> None:
    from lora_harness.report.thumb_pack import PackAppender

    appender = PackAppender(tmp_path / "p.thumbs")
    appender.append(record("a.jpg", b"A" * 10, 1))

    class HalfWrite:  # writes part of the batch, then the disk is full
        def __init__(self, handle):
            self.handle = handle

        def fileno(self):
            return self.handle.fileno()

        def write(self, data):
            if len(data) > 8:
                return self.handle.write(bytes(data[:8]))
            raise OSError(28, "No space left on device")

    real = appender._handle
    appender._handle = HalfWrite(real)
    with pytest.raises(OSError, match="No space"):
        appender.append(record("b.jpg", b"B" * 10, 2))
    appender._handle = real
    appender.append(record("c.jpg", b"C" * 10, 3))
    appender.close()
    entries, problem = read_pack(tmp_path / "p.thumbs")
    assert problem is None and {n: e.read() for n, e in entries.items()} == {"a.jpg": b"A" * 10, "c.jpg": b"C" * 10}
