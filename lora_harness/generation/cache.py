"""The image cache of generation mode: an image is regenerated only when something that shapes it changed.

Images live at kohya-style paths under `reports/<run>/images/` (readable, stable across runs, known before
the image exists). Each PNG carries, in a text chunk, a content-addressed key: the SHA-256 of everything that
determines its pixels (base model identity, pipeline class, dtype, device type, LoRA file hash and scale,
prompt, negative prompt, seed, size, steps, guidance, library versions) together with that material, so a
person can see why an image was (re)made. A rerun reuses an image whose stored key equals the case's key
and whose pixel data is intact: the key's text chunk precedes the pixel data, so a file truncated or
corrupted after it (a full disk, a bad copy, another tool rewriting it) would otherwise pass the key check
and be judged as a broken image. A seal after the pixel data (SHA-256 of the IDAT chunks) is checked
without decoding; the key also carries a digest of the decoded pixels for files without a seal. Writes are atomic (temporary file, then
rename), so a crash never leaves a half-written image behind.

No torch or diffusers here: checking the cache must stay cheap when every image is already there.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from lora_harness.core.redact import Redactor
from lora_harness.sources.generate import GeneratedCase

CACHE_FORMAT = 1
PNG_TEXT_KEY = "lora_harness"
PNG_SEAL_KEY = "lora_harness_seal"  # after the pixel data: SHA-256 of the IDAT chunks as written
VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "peft")
_CONFIG_SUFFIXES = (".json", ".txt", ".model")


@dataclass(frozen=True)
class CacheKey:
    digest: str
    material: dict[str, Any]

    @classmethod
    def of(cls, material: dict[str, Any]) -> "CacheKey":
        canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return cls(hashlib.sha256(canonical.encode("utf-8")).hexdigest(), material)


# --- what an image depends on --------------------------------------------------------------------------------

_HASHES: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so a sweep's files are hashed once per process."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if memo not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[memo] = digest.hexdigest()
    return _HASHES[memo]


@lru_cache(maxsize=None)
def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose numerics shape the image (read from metadata, no import)."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


@lru_cache(maxsize=None)
def model_identity(model: str, revision: str | None) -> dict[str, Any]:
    """What identifies the base model: a local folder's files (configs by content, weights by size and mtime;
    hashing 20+ GB of FLUX weights per run would cost minutes), or a hub id with its revision and, when it is
    in the local Hugging Face cache, the snapshot commit."""
    path = Path(model)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = file.relative_to(path).as_posix()
            if file.suffix in _CONFIG_SUFFIXES and file.stat().st_size < 10_000_000:
                digest.update(f"{rel}:{hashlib.sha256(file.read_bytes()).hexdigest()}\n".encode())
            else:
                stat = file.stat()
                digest.update(f"{rel}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        return {"folder": str(path.resolve()), "files": digest.hexdigest()}
    identity: dict[str, Any] = {"hub_id": model, "revision": revision}
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model_index.json", revision=revision)
        if isinstance(cached, str):
            identity["snapshot"] = Path(cached).parent.name
    except Exception:  # not installed or not cached: the id and revision still identify the model
        pass
    return identity


def case_key(case: GeneratedCase, *, pipeline: dict[str, Any]) -> CacheKey:
    """The cache key of a generated case; `pipeline` holds the base model identity, class, dtype, device type."""
    prompt = case.prompt
    lora = None
    if case.lora is not None:
        lora = {"sha256": file_sha256(case.lora), "scale": case.lora_scale}
    return CacheKey.of(
        {
            "format": CACHE_FORMAT,
            "pipeline": pipeline,
            "lora": lora,
            "prompt": prompt.text,
            "negative": prompt.negative,
            "seed": case.seed,
            "width": prompt.width,
            "height": prompt.height,
            "steps": prompt.steps,
            "guidance": prompt.guidance,
            "cfg_scale": prompt.cfg_scale,
            "versions": library_versions(),
        }
    )


# --- reading and writing images ------------------------------------------------------------------------------


def pixel_digest(image: Image.Image) -> str:
    """SHA-256 of the decoded pixels (mode, size, raw bytes): what a judge sees, independent of PNG encoding."""
    digest = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheCheck:
    """Whether a cached image can be reused; `reason` says why not (absent, other key, corrupt pixels)."""

    usable: bool
    reason: str
    corrupt: bool = False  # the key matched but the file is damaged: worth a line in the log


def check_cached(path: Path, key_digest: str) -> CacheCheck:
    """Whether the cached PNG was made under `key_digest` and its pixel data is intact.

    Fast path (files this version writes): every chunk's CRC and length, and the SHA-256 of the IDAT data
    against the seal written after it (no decode: ~1 ms per MB). Files without a seal (written before the
    seal existed, or rewritten by another tool) are decoded in full and compared with the pixel digest.
    """
    if not path.is_file():
        return CacheCheck(False, "not generated yet")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return CacheCheck(False, f"cached PNG cannot be read ({exc})", corrupt=True)
    chunks, damage = png_chunks(data)
    text = _text_chunk(chunks, PNG_TEXT_KEY)
    try:
        stored = json.loads(text) if text else None
    except ValueError:
        stored = None
    if not isinstance(stored, dict) or stored.get("key") != key_digest:
        if damage and not chunks:
            return CacheCheck(False, f"cached PNG is damaged ({damage})", corrupt=True)
        return CacheCheck(False, "made under another key (a setting, the LoRA or the model changed)" if stored else "not made by lora-harness")
    if damage:
        return CacheCheck(False, f"cached PNG is damaged ({damage})", corrupt=True)
    seal = _text_chunk(chunks, PNG_SEAL_KEY)
    if seal is not None:
        if seal == _idat_digest(chunks):
            return CacheCheck(True, "reused")
        return CacheCheck(False, "cached PNG's pixel data differs from the seal written with it (corrupted or overwritten)", corrupt=True)
    return _check_decoded(path, stored)


def _check_decoded(path: Path, stored: dict[str, Any]) -> CacheCheck:
    """Slow path: decode every pixel and compare with the pixel digest stored beside the key."""
    expected = stored.get("pixels")
    if expected is None:
        return CacheCheck(False, "cached PNG has no pixel digest (written by an older lora-harness)")
    try:
        with Image.open(path) as img:
            img.load()  # a truncated or corrupt IDAT raises here
            actual = pixel_digest(img)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # zlib errors arrive as OSError/ValueError
        return CacheCheck(False, f"cached PNG cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})", corrupt=True)
    if actual != expected:
        return CacheCheck(False, "cached PNG's pixels differ from the digest stored when it was generated (corrupted or overwritten)", corrupt=True)
    return CacheCheck(True, "reused")


# --- PNG chunks (the seal) -------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes) -> tuple[list[tuple[bytes, bytes]], str | None]:
    """(chunks read, what is wrong) of a PNG: lengths and CRCs checked, up to IEND; no pixel is decoded."""
    if not data.startswith(_PNG_SIGNATURE):
        return [], "not a PNG file (bad signature)"
    chunks: list[tuple[bytes, bytes]] = []
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            return chunks, f"truncated: the file ends at byte {len(data)} before its IEND chunk"
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return chunks, f"truncated inside a {kind.decode('latin-1')} chunk (needs {end} bytes, the file has {len(data)})"
        body = data[pos + 8:pos + 8 + length]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4:end])[0]:
            return chunks, f"CRC mismatch in a {kind.decode('latin-1')} chunk at byte {pos}: the bytes were altered"
        chunks.append((kind, body))
        if kind == b"IEND":
            return chunks, None
        pos = end


def _text_chunk(chunks: list[tuple[bytes, bytes]], keyword: str) -> str | None:
    for kind, body in chunks:
        if kind == b"tEXt":
            name, _, text = body.partition(b"\0")
            if name == keyword.encode("latin-1"):
                return text.decode("latin-1")
    return None


def _idat_digest(chunks: list[tuple[bytes, bytes]]) -> str:
    digest = hashlib.sha256()
    for kind, body in chunks:
        if kind == b"IDAT":
            digest.update(body)
    return digest.hexdigest()


def _sealed(png: bytes) -> bytes:
    """The PNG with a tEXt chunk holding the SHA-256 of its IDAT data, placed just before IEND."""
    chunks, damage = png_chunks(png)
    if damage:  # pragma: no cover - PIL just wrote it
        raise ValueError(f"cannot seal the PNG: {damage}")
    body = PNG_SEAL_KEY.encode("latin-1") + b"\0" + _idat_digest(chunks).encode("ascii")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return png[:-12] + chunk + png[-12:]  # IEND is the last 12 bytes


def stored_digest(path: Path) -> str | None:
    """The key a cached PNG was generated under; None when absent, unreadable or not made by the harness."""
    try:
        with Image.open(path) as img:  # text chunks precede the pixel data: nothing is decoded here
            text = img.info.get(PNG_TEXT_KEY)
        return json.loads(text)["key"] if text else None
    except (OSError, ValueError, KeyError, TypeError, SyntaxError):
        return None


def save_png(image: Image.Image, path: Path, key: CacheKey) -> None:
    """Write atomically, with the key, its material and the pixel digest embedded, so image and key can never
    disagree and damaged pixels are detected before reuse (`check_cached`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    record = {"key": key.digest, "pixels": pixel_digest(image), **key.material}
    info.add_text(PNG_TEXT_KEY, json.dumps(record, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_sealed(buffer.getvalue()))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class GenerationLog:
    """One JSON line per event (pipeline built, LoRA loaded, image generated/reused/failed), one file per worker.

    Plain appends without fsync: the log explains a run, it is not data that must survive a crash. Fields are
    redacted as the score store's rows are: a failed download or load can quote a hub token in its message.
    """

    def __init__(self, folder: Path, worker: str, redactor: Redactor | None = None) -> None:
        self.path = Path(folder) / f"generation.{worker}.jsonl"
        self.worker = worker
        self.redactor = Redactor() if redactor is None else redactor

    def write(self, event: str, **fields: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"event": event, "worker": self.worker, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, default=str)  # str() first: a field may be a Path or an exception
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(self.redactor.value(json.loads(line))) + "\n")

