"""Malformed and hostile uploads, made here (no file is committed): decompression bombs,
images too small to hold a face, a tiny video, and file names meant to break paths or pages."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 30000) -> bytes:
    """A valid 1-bit PNG of side x side black pixels: ~110 KB on disk, 900 megapixels decoded."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 1000) for _ in range(side // 1000)]
    parts.append(comp.compress(row * (side % 1000)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts)) + \
        _png_chunk(b"IEND", b"")


def jpeg_claiming(width: int = 65500, height: int = 65500) -> bytes:
    """A small real JPEG whose SOF header claims another size."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 90, 60)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


def gif_claiming(side: int = 30000) -> bytes:
    """A GIF whose logical screen and only frame claim side x side."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("P", (8, 8), 1).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", side, side)  # logical screen
    j = data.index(b"\x2c")  # image descriptor
    data[j + 5:j + 9] = struct.pack("<HH", side, side)
    return bytes(data)


def one_pixel(fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buf, fmt)
    return buf.getvalue()


def tiny_video(path: Path, side: int = 2, frames: int = 3) -> bytes:
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=red:s={side}x{side}:r=25",
                    "-frames:v", str(frames), "-pix_fmt", "yuv444p", str(path)], check=True, timeout=60)
    return path.read_bytes()


# (label, file name, bytes maker, the outcomes that are right: a problem code, or "report")
def hostile_files(tmp: Path, photo: bytes) -> list[tuple[str, str, bytes, set[str]]]:
    big = {"too-many-pixels"}
    small = {"too-small"}
    named = {"report"}  # a hostile name is harmless: the photo is checked under a safe name
    return [
        ("png bomb 30000x30000", "bomb.png", png_bomb(), big),
        ("jpeg SOF 65500x65500", "huge.jpg", jpeg_claiming(), big),
        ("gif 30000x30000", "huge.gif", gif_claiming(), big),
        *[(f"1 px {fmt}", f"dot.{fmt.lower()}", one_pixel(fmt), small)
          for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")],
        ("2x2 video, 3 frames", "tiny.mp4", tiny_video(tmp / "tiny.mp4"), small),
        ("300-char name", "a" * 296 + ".jpg", photo, named),
        ("20,000-char name", "b" * 19996 + ".jpg", photo, named | {"bad-file-name"}),
        ("traversal", "../../../../etc/passwd", photo, named),
        ("dot-dot", "..", photo, named),
        ("dots", "...jpg", photo, named),
        ("device name", "CON", photo, named),
        ("device name with extension", "NUL.jpg", photo, named),
        ("html", "<img src=x onerror=alert(1)>.jpg", photo, named),
        ("rtl override", "photo\u202egpj.exe", photo, named),
        ("nul byte", "a\x00b.jpg", photo, named | {"bad-file-name"}),
    ]
