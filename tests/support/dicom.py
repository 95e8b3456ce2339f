"""DICOM files for tests, written by pydicom itself (Part 10: preamble, file meta, dataset)."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def dicom_bytes(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    syntax: UID = ExplicitVRLittleEndian,
    frames: int = 1,
    pixel_data: bytes | None = None,
    **elements: object,
) -> bytes:
    """A DICOM file holding ``pixels``: (H, W) grey of any integer type, (H, W, 3) uint8 RGB, or with
    ``frames`` > 1 (frames, H, W) grey. ``elements`` are set on the dataset (RescaleSlope=..., ...);
    ``pixel_data`` replaces the encoded pixels (for a compressed ``syntax``, fake encapsulated data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset("test.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    rgb = photometric == "RGB"
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = photometric
    if rgb:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = int(np.issubdtype(pixels.dtype, np.signedinteger))
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes() if pixel_data is None else pixel_data
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
