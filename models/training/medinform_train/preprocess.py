"""The numpy reference of the worker's preprocessing (core/src/registry/preprocess.rs).

Both implement models/README.md ("Preprocessing, exactly") step for step, and the parity tests
hold them to the same tensors. Training imports this module, so a network is trained on exactly
the tensors the worker will feed it.

    manifest = load_manifest("models/malaria")          # a folder or its manifest.toml
    x = preprocess_file("cell.png", manifest)            # float32, (C,H,W) or (H,W,C)
    x = preprocess_image(pil_image_or_uint8_array, manifest)

Only numpy and Pillow (for decoding) are used; every step is written out so that a reader can
compare it line by line with the Rust code. Floating-point operations are done in the same order
and precision as there, so the two agree bit for bit on PNG input (JPEG decoders may differ).
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

import numpy as np

__all__ = [
    "load_manifest",
    "decode_image",
    "to_color",
    "resize_nearest",
    "resize_triangle",
    "sharpen",
    "equalize_histogram",
    "normalize",
    "preprocess_u8",
    "preprocess_image",
    "preprocess_file",
]


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read a model's manifest.toml (`path` is the file or the model folder).

    Only the fields preprocessing needs are checked here; the Rust registry validates the rest.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "manifest.toml")
    with open(path, "rb") as f:
        manifest = tomllib.load(f)
    inp = manifest.get("input")
    if not isinstance(inp, dict):
        raise ValueError(f"{path}: missing [input]")
    for key in ("layout", "color", "width", "height", "normalize"):
        if key not in inp:
            raise ValueError(f"{path}: missing input.{key}")
    if inp["layout"] not in ("nchw", "nhwc"):
        raise ValueError(f"{path}: input.layout must be nchw or nhwc, not {inp['layout']!r}")
    if inp["color"] not in ("gray", "rgb"):
        raise ValueError(f"{path}: input.color must be gray or rgb, not {inp['color']!r}")
    channels = 1 if inp["color"] == "gray" else 3
    for key in ("mean", "std"):
        values = inp["normalize"].get(key)
        if not isinstance(values, list) or len(values) != channels:
            raise ValueError(f"{path}: input.normalize.{key} must have {channels} value(s)")
    return manifest


# ---------------------------------------------------------------------------------------------
# Decoding and colour


def decode_image(source: Any) -> np.ndarray:
    """Decode a file path, bytes or PIL image to uint8, (H,W) or (H,W,C) with C in 2..4.

    16-bit samples are reduced by `v >> 8`; float samples are clamped to [0,1] and scaled by 255,
    rounded half to even. Palette images are expanded to RGB(A).
    """
    from PIL import Image

    if isinstance(source, (bytes, bytearray)):
        import io

        source = Image.open(io.BytesIO(source))
    elif not isinstance(source, Image.Image):
        source = Image.open(source)
    img = source
    img.load()
    mode = img.mode
    if mode in ("L", "RGB", "RGBA", "LA"):
        return np.asarray(img, dtype=np.uint8)
    if mode == "P" or mode == "PA":
        return np.asarray(img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB"))
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey (Pillow widens it to 32-bit "I" in some versions).
        values = np.asarray(img).astype(np.int64)
        return (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
    if mode == "F":
        values = np.asarray(img, dtype=np.float32)
        return np.rint(np.clip(values, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def to_color(pixels: np.ndarray, color: str) -> np.ndarray:
    """Convert decoded uint8 pixels to the manifest's colour: (H,W,1) for gray, (H,W,3) for rgb.

    Alpha is dropped (never composited). Gray is the ITU-R BT.601 luma with integer rounding:
    (299 R + 587 G + 114 B + 500) // 1000.
    """
    if pixels.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels in (1, 2):  # gray, gray + alpha
        gray = pixels[:, :, :1]
        if color == "gray":
            return np.ascontiguousarray(gray)
        return np.ascontiguousarray(np.repeat(gray, 3, axis=2))
    rgb = pixels[:, :, :3]
    if color == "rgb":
        return np.ascontiguousarray(rgb)
    r = rgb[:, :, 0].astype(np.uint32)
    g = rgb[:, :, 1].astype(np.uint32)
    b = rgb[:, :, 2].astype(np.uint32)
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)[:, :, None]


# ---------------------------------------------------------------------------------------------
# Resizing


def nearest_indices(src_len: int, dst_len: int) -> np.ndarray:
    """PIL NEAREST source indices: position 0.5*s, advanced by s = src/dst in double precision
    for each output index, truncated (Pillow's ImagingScaleAffine)."""
    step = src_len / dst_len
    position = step * 0.5
    out = np.empty(dst_len, dtype=np.intp)
    for i in range(dst_len):
        out[i] = min(int(position), src_len - 1)
        position += step
    return out


def resize_nearest(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of (H,W,C) uint8 pixels to (height,width,C), PIL NEAREST."""
    rows = nearest_indices(pixels.shape[0], height)
    cols = nearest_indices(pixels.shape[1], width)
    return np.ascontiguousarray(pixels[rows][:, cols])


def triangle_weights(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps of PIL's BILINEAR filter (support 1, scaled by the downscale factor).

    Returns (first, weights): output i reads source pixels first[i] .. first[i]+k-1 with
    weights[i, :] (float32, normalised in double precision, zero-padded to k taps).
    """
    scale = src_len / dst_len
    filter_scale = max(scale, 1.0)
    support = 1.0 * filter_scale
    taps = int(np.ceil(support)) * 2 + 1
    first = np.zeros(dst_len, dtype=np.intp)
    weights = np.zeros((dst_len, taps), dtype=np.float32)
    inv = 1.0 / filter_scale
    for i in range(dst_len):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), src_len)
        w = []
        total = 0.0
        for x in range(lo, hi):
            t = abs((x - center + 0.5) * inv)
            v = 1.0 - t if t < 1.0 else 0.0
            w.append(v)
            total += v
        if total != 0.0:
            w = [v / total for v in w]
        first[i] = lo
        weights[i, : len(w)] = np.asarray(w, dtype=np.float64).astype(np.float32)
    return first, weights


def _triangle_pass(pixels: np.ndarray, dst_len: int, axis: int) -> np.ndarray:
    src_len = pixels.shape[axis]
    first, weights = triangle_weights(src_len, dst_len)
    moved = np.moveaxis(pixels, axis, 0).astype(np.float32)  # (src_len, other, C)
    padded = np.concatenate([moved, np.zeros((weights.shape[1],) + moved.shape[1:], np.float32)])
    acc = np.zeros((dst_len,) + moved.shape[1:], dtype=np.float32)
    for k in range(weights.shape[1]):
        # One tap at a time, in tap order, in float32: the same sums as the Rust loop.
        acc = acc + weights[:, k, None, None] * padded[first + k]
    out = np.clip(np.floor(acc + np.float32(0.5)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def resize_triangle(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Separable antialiased bilinear resize (horizontal pass, then vertical), each pass in
    float32 and rounded half up and clamped to uint8. A pass whose size does not change is
    skipped (it would be the identity)."""
    out = pixels
    if out.shape[1] != width:
        out = _triangle_pass(out, width, axis=1)
    if out.shape[0] != height:
        out = _triangle_pass(out, height, axis=0)
    return out


# ---------------------------------------------------------------------------------------------
# Sharpen and histogram equalisation (OpenCV semantics)


def sharpen(pixels: np.ndarray, kernel: list[float]) -> np.ndarray:
    """3x3 convolution per channel, OpenCV filter2D(src, -1, kernel): border reflect-101, the
    non-zero taps summed in row-major order in float32, rounded half to even (cvRound) and
    saturated to uint8."""
    k = np.asarray(kernel, dtype=np.float32).reshape(3, 3)
    h, w = pixels.shape[:2]
    padded = np.pad(pixels, ((1, 1), (1, 1), (0, 0)), mode="reflect").astype(np.float32)
    acc = np.zeros(pixels.shape, dtype=np.float32)
    for dy in range(3):
        for dx in range(3):
            if k[dy, dx] != 0:
                acc = acc + k[dy, dx] * padded[dy : dy + h, dx : dx + w]
    return np.clip(np.rint(acc), 0, 255).astype(np.uint8)


def equalize_lut(channel: np.ndarray) -> np.ndarray:
    """OpenCV equalizeHist's lookup table for one uint8 channel."""
    hist = np.bincount(channel.ravel(), minlength=256)
    total = int(channel.size)
    first = int(np.flatnonzero(hist)[0])
    lut = np.zeros(256, dtype=np.uint8)
    if hist[first] == total:
        lut[:] = first
        return lut
    scale = np.float32(255.0) / np.float32(total - hist[first])
    cumulative = np.cumsum(hist[first + 1 :]).astype(np.float32)
    lut[first + 1 :] = np.clip(np.rint(cumulative * scale), 0, 255).astype(np.uint8)
    return lut


def _descale(x: np.ndarray, shift: int = 14) -> np.ndarray:
    return (x + (1 << (shift - 1))) >> shift


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """OpenCV cvtColor(COLOR_RGB2YUV) for uint8: 14-bit fixed point, BT.601."""
    r, g, b = (rgb[:, :, i].astype(np.int32) for i in range(3))
    y = _descale(r * 4899 + g * 9617 + b * 1868)
    u = _descale((b - y) * 8061 + (128 << 14))
    v = _descale((r - y) * 14369 + (128 << 14))
    return np.clip(np.stack([y, u, v], axis=2), 0, 255).astype(np.uint8)


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """OpenCV cvtColor(COLOR_YUV2RGB) for uint8: 14-bit fixed point, BT.601."""
    y, u, v = (yuv[:, :, i].astype(np.int32) for i in range(3))
    u = u - 128
    v = v - 128
    r = y + _descale(v * 18678)
    g = y + _descale(u * -6472 + v * -9519)
    b = y + _descale(u * 33292)
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8)


def equalize_histogram(pixels: np.ndarray) -> np.ndarray:
    """OpenCV equalizeHist of the gray channel, or for RGB of the Y of OpenCV's RGB->YUV,
    converted back with OpenCV's YUV->RGB."""
    if pixels.shape[2] == 1:
        return equalize_lut(pixels[:, :, 0])[pixels]
    yuv = rgb_to_yuv(pixels)
    yuv[:, :, 0] = equalize_lut(yuv[:, :, 0])[yuv[:, :, 0]]
    return yuv_to_rgb(yuv)


# ---------------------------------------------------------------------------------------------
# Normalisation and the whole pipeline


def normalize(pixels: np.ndarray, scale: float, mean: list[float], std: list[float]) -> np.ndarray:
    """x = (pixel * scale - mean[c]) / std[c], computed in double precision and rounded once to
    float32; (H,W,C) float32."""
    values = np.arange(256, dtype=np.float64)
    out = np.empty(pixels.shape, dtype=np.float32)
    for c in range(pixels.shape[2]):
        lut = ((values * float(scale) - float(mean[c])) / float(std[c])).astype(np.float32)
        out[:, :, c] = lut[pixels[:, :, c]]
    return out


def preprocess_u8(pixels: np.ndarray, manifest: dict[str, Any]) -> np.ndarray:
    """Colour conversion and the `[[input.preprocess]]` steps: (height,width,C) uint8."""
    inp = manifest["input"]
    width, height = int(inp["width"]), int(inp["height"])
    img = to_color(pixels, inp["color"])
    resized = False
    for step in inp.get("preprocess", []):
        op = step["op"]
        if op == "resize":
            if step["filter"] == "nearest":
                img = resize_nearest(img, width, height)
            elif step["filter"] == "triangle":
                img = resize_triangle(img, width, height)
            else:
                raise ValueError(f"unknown resize filter {step['filter']!r}")
            resized = True
        elif op == "sharpen":
            img = sharpen(img, step["kernel"])
        elif op == "equalize_histogram":
            img = equalize_histogram(img)
        else:
            raise ValueError(f"unknown preprocess op {op!r}")
    if not resized:
        img = resize_triangle(img, width, height)
    return img


def preprocess_image(image: Any, manifest: dict[str, Any]) -> np.ndarray:
    """A PIL image or a uint8 array ((H,W) or (H,W,C)) to the network's input tensor for one
    image: float32 (C,H,W) for layout nchw, (H,W,C) for nhwc."""
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        pixels = image
    else:
        pixels = decode_image(image)
    img = preprocess_u8(pixels, manifest)
    norm = manifest["input"]["normalize"]
    out = normalize(img, norm["scale"], norm["mean"], norm["std"])
    if manifest["input"]["layout"] == "nchw":
        out = np.ascontiguousarray(out.transpose(2, 0, 1))
    return out


def preprocess_file(path: str | os.PathLike, manifest: dict[str, Any]) -> np.ndarray:
    """Decode an image file and preprocess it (see `preprocess_image`)."""
    return preprocess_image(decode_image(os.fspath(path)), manifest)
