"""Which image files the engine, the service and the client take: one list for all of them.

Standard library only, so the HTTP client (``gtcorrect.client``) can walk folders with the same list
without loading numpy, PIL or pydicom.
"""

from __future__ import annotations

# Folder walkers (CLI loaders, the client) pick files by these endings; uploads are recognised by
# content whatever their name.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
# How messages name the accepted formats.
FORMAT_NAMES = "PNG, JPEG, TIFF, BMP or DICOM"
