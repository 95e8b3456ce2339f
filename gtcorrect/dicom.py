"""DICOM images: which files are taken, and their header, read one way for every caller.

Taken: DICOM Part 10 files (the 128-byte preamble and ``DICM``) holding one 2D frame (NumberOfFrames
absent or 1), stored uncompressed (Implicit or Explicit VR Little Endian), as MONOCHROME1, MONOCHROME2
or RGB. Refused with ``DicomRefused``, naming the file and the reason, before any pixel is decoded:

- multi-frame files: a volume is sent as one NIfTI file;
- every other transfer syntax (JPEG, JPEG-LS, JPEG 2000, RLE, Deflate; the retired Big Endian). What
  would decode would depend on the plugins a machine has, a compressed stream's decoded size cannot be
  checked against the header before it is decoded, and a Deflated file is inflated whole before
  anything in it can be read;
- other photometric interpretations (PALETTE COLOR, YBR_*).

``read_header`` reads the file meta, then the dataset up to the pixel data: ``gtcorrect.data`` checks the
pixel count with it before decoding, and the upload service sizes its decode budget from it. pydicom is
imported on first use, so only DICOM files pay for loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, BinaryIO, cast

MAGIC_OFFSET = 128  # "DICM" follows the preamble
MAGIC = b"DICM"
# A preamble may hold anything: a file that starts like another image format is never taken for DICOM.
_OTHER_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"BM",
    b"GIF8",
    b"RIFF",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
)
UNCOMPRESSED = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
}
SAMPLES = {"MONOCHROME1": 1, "MONOCHROME2": 1, "RGB": 3}  # photometric interpretation -> samples per pixel
_DEFER_BYTES = 1 << 16  # header values above this size (overlays, private blobs) are not read


def is_dicom(head: bytes) -> bool:
    """Whether ``head`` (at least the first 132 bytes of a file) starts a DICOM Part 10 file."""
    return head[MAGIC_OFFSET : MAGIC_OFFSET + len(MAGIC)] == MAGIC and not head.startswith(_OTHER_MAGIC)


class DicomRefused(ValueError):
    """A DICOM file of a kind the engine does not take; the message names the file and the reason."""


@dataclass(frozen=True)
class DicomHeader:
    """What the header says about the pixels: rows = H, columns = W, samples = C."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    photometric: str
    rescaled: bool  # Rescale Slope and Intercept given: the Modality LUT makes float64 values

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded pixels as the reader holds them: the stored samples, or 8 bytes a sample
        once rescaled."""
        per_sample = 8 if self.rescaled else max(1, (self.bits_allocated + 7) // 8)
        return self.rows * self.columns * self.samples * per_sample


def _past_file_meta(tag: int, vr: str | None, length: int) -> bool:
    return tag >> 16 != 0x0002


def read_header(fp: IO[bytes], label: str) -> DicomHeader:
    """The header of the DICOM file ``fp`` (seekable; read from its start), without its pixels.

    Raises ``DicomRefused`` for a file of a kind not taken, pydicom's errors for an unreadable one.
    """
    from pydicom import dcmread
    from pydicom.filereader import read_dataset, read_preamble
    from pydicom.uid import UID

    stream = cast(BinaryIO, fp)  # pydicom's annotations name BinaryIO; any binary file object reads
    stream.seek(0)
    read_preamble(stream, False)
    # The file meta group is always Explicit VR Little Endian. It is read alone first so that a Deflated
    # file is refused before pydicom inflates its whole dataset (a zip bomb would unpack here).
    meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True, stop_when=_past_file_meta)
    syntax = meta.get("TransferSyntaxUID")
    if syntax is None:
        raise DicomRefused(f"{label}: the DICOM file meta has no Transfer Syntax UID.")
    if str(syntax) not in UNCOMPRESSED:
        raise DicomRefused(
            f"{label}: DICOM transfer syntax {UID(str(syntax)).name} is not supported; send uncompressed "
            "DICOM (Explicit or Implicit VR Little Endian)."
        )
    stream.seek(0)
    ds = dcmread(stream, stop_before_pixels=True, defer_size=_DEFER_BYTES)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise DicomRefused(
            f"{label}: multi-frame DICOM ({frames} frames): send one 2D image per file, or the volume "
            "as one NIfTI file (.nii.gz)."
        )
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomRefused(f"{label}: the DICOM file holds no image (no Rows and Columns).")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if SAMPLES.get(photometric) != samples:
        raise DicomRefused(
            f"{label}: DICOM photometric interpretation {photometric or '(none)'} with {samples} samples "
            "per pixel is not supported (MONOCHROME1, MONOCHROME2 or RGB)."
        )
    return DicomHeader(
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples=samples,
        bits_allocated=int(ds.get("BitsAllocated") or 8),
        photometric=photometric,
        rescaled="RescaleSlope" in ds and "RescaleIntercept" in ds,
    )
