"""The reference viewer pipeline for DICOM images (core/src/imaging/dicom.rs implements it in Rust).

A DICOM X-ray is shown as a radiologist's viewer shows it, with pydicom's own functions:

1. the stored values (``pixel_array``: masked to Bits Stored, sign-extended when signed);
2. ``apply_modality_lut``: the Modality LUT Sequence, else Rescale Slope/Intercept;
3. ``apply_voi_lut``: the first VOI LUT Sequence item, else the first Window Center/Width with its
   VOI LUT Function, else nothing (the full stored range);
4. the VOI's output range mapped linearly to 0..255 and rounded; MONOCHROME1 inverted.

Colour images (RGB, and YBR converted to RGB by pydicom) are scaled from Bits Stored to 8 bits. The
output range of step 4 is the one PS3.3 C.11 gives the VOI transform: for a window, the modality
LUT's output range (the stored range through the rescale); for a VOI LUT, 0..2^bits-1 of its
descriptor.

The service's decoder is held to this function (within one grey level) on real DICOM files by
core/tests/it/dicom.rs, and training can read DICOM exports through it to learn on the same
pixels that the service will screen.

    python -m medinform_train.dicom OUT_DIR NAME_OR_PATH...

writes ``OUT_DIR/<i>.npy`` (uint8, HxW or HxWx3) for each file it renders and prints one JSON
line per file: ``{"name", "path", "npy"}`` or ``{"name", "path", "error"}``. A bare name is
looked up among pydicom's and pydicom-data's test files.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np

__all__ = ["render", "resolve"]


def _voi_range(ds) -> tuple[float, float]:
    """The range of the VOI transform's output, as pydicom's ``apply_windowing`` computes it."""
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        y_min, y_max = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.PixelRepresentation) == 0:
        y_min, y_max = 0.0, float(2**bits - 1)
    else:
        y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        y_min, y_max = y_min * slope + intercept, y_max * slope + intercept
    return y_min, y_max


def render(ds) -> np.ndarray:
    """The 8-bit image (HxW or HxWx3, uint8) of a single-frame DICOM data set."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise ValueError("multi-frame objects are not rendered")
    # pixel_array gives colour as RGB: YBR_FULL is converted (convert_color_space), and JPEG's
    # YBR_FULL_422 comes out of the decoder as RGB.
    arr = ds.pixel_array
    pi = str(ds.PhotometricInterpretation)
    if pi in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        max_value = float(2 ** int(ds.BitsStored) - 1)
        return np.clip(np.round(arr.astype(np.float64) * 255.0 / max_value), 0, 255).astype(np.uint8)
    if pi not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric interpretation {pi} is not rendered")

    values = apply_modality_lut(arr, ds)
    has_voi_lut = bool(ds.get("VOILUTSequence"))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if has_voi_lut:
        values = apply_voi_lut(values.astype(np.int64), ds, index=0, prefer_lut=True)
        lo, hi = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    else:
        if has_window:
            values = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        lo, hi = _voi_range(ds)
    values = values.astype(np.float64)
    if hi == lo:
        out = np.zeros(values.shape, dtype=np.uint8)
    else:
        out = np.clip(np.round((values - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    if pi == "MONOCHROME1":
        out = 255 - out
    return out


def resolve(name_or_path: str) -> str:
    """A path as it is, else the path of a pydicom or pydicom-data test file of that name."""
    if os.path.exists(name_or_path):
        return name_or_path
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name_or_path)
    if path is None:
        raise FileNotFoundError(name_or_path)
    return str(path)


def main(argv: list[str]) -> int:
    import pydicom

    out_dir, names = argv[0], argv[1:]
    os.makedirs(out_dir, exist_ok=True)
    warnings.simplefilter("ignore")
    for i, name in enumerate(names):
        path = resolve(name)
        line: dict[str, str] = {"name": name, "path": path}
        try:
            image = render(pydicom.dcmread(path))
            npy = os.path.join(out_dir, f"{i}.npy")
            np.save(npy, image)
            line["npy"] = npy
        except Exception as e:  # noqa: BLE001 - reported per file; the caller decides
            line["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
