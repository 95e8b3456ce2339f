"""Which image files the engine, the service and the client take: one list for all of them.

Standard library only, so the HTTP client (``gtcorrect.client``) can walk folders with the same list
without loading numpy, PIL or pydicom.
"""

from __future__ import annotations

# Folder walkers (CLI loaders, the client) pick files by these endings; uploads are recognised by
# content whatever their name.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
# 3D volumes (NIfTI), trained slice-wise: the engine's folders, the service's uploads, the client's folders.
VOLUME_SUFFIXES = (".nii.gz", ".nii")
# How messages name the accepted formats.
FORMAT_NAMES = "PNG, JPEG, TIFF, BMP or DICOM"


def is_volume_name(name: str) -> bool:
    """A NIfTI volume, by its file name."""
    return name.lower().endswith(VOLUME_SUFFIXES)


def is_image_name(name: str) -> bool:
    """A file a folder walker picks up: a 2D image or a volume, by its file name."""
    return name.lower().endswith(IMAGE_SUFFIXES) or is_volume_name(name)


def volume_stem(name: str) -> str:
    """A volume's name: its file name without the NIfTI ending (``case_001.nii.gz`` -> ``case_001``)."""
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
