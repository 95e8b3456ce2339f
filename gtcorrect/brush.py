"""Label Studio's brush masks: the bit-packed run-length encoding of an RGBA image that a
``brushlabels`` result holds in ``value.rle`` (a list of byte values).

Ported from HumanSignal/label-studio-converter ``label_studio_converter/brush.py`` (``decode_rle``,
``encode_rle``, ``InputStream``, ``bytes2bit``, ``bits2byte``; the same layout as thi-ng/umbrella's
``rle-pack``, which Label Studio's editor uses), rewritten to read bit fields from the bytes directly
(a chunk's head as one 64-bit window, a list of words with numpy) instead of a string of '0' and '1',
and to keep only the alpha channel. The stream, most significant bit first:

- 32 bits: how many values follow (width * height * 4: R, G, B, alpha of each pixel, row by row);
- 5 bits: the word size minus 1 (8 for Label Studio);
- 4 x 4 bits: four run-length field sizes minus 1 (``RUN_BITS``, 3, 4, 8 and 16 bits);
- then chunks: 1 bit (1: one word repeated, 0: a list of words), 2 bits choosing a field size, that many
  bits holding the chunk's length minus 1, then the repeated word or the list of words;
- zero bits up to a whole byte (the converter adds a whole zero byte when there is nothing to fill).

A pixel is in the mask when its alpha is above 0, as the converter's ``ls_rle_to_coco_rle`` reads it.
Shape legend: H, W mask height and width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gtcorrect.export import run_lengths

RUN_BITS = (3, 4, 8, 16)  # the converter's and rle-pack's default run-length field sizes
HEADER_BITS = 32 + 5 + 4 * 4


def _field(data: bytes, pos: int, n: int) -> int:
    """The ``n`` bits from bit ``pos`` of ``data`` (most significant first) as an unsigned integer."""
    first, last = pos // 8, (pos + n + 7) // 8
    return (int.from_bytes(data[first:last], "big") >> (8 * last - pos - n)) & ((1 << n) - 1)


def _nonzero_words(data: bytes, pos: int, count: int, size: int) -> np.ndarray:
    """``count`` words of ``size`` bits from bit ``pos``: (count,) bool, whether each is above 0."""
    first = pos // 8
    bits = np.unpackbits(np.frombuffer(data, np.uint8, (pos + count * size + 7) // 8 - first, first))
    offset = pos - 8 * first
    return np.any(bits[offset : offset + count * size].reshape(count, size), axis=1)


def header_values(rle: Sequence[int]) -> int:
    """How many values (width * height * 4) the RLE says it holds; ValueError if it cannot say."""
    data = _bytes(rle)
    if 8 * len(data) < HEADER_BITS:
        raise ValueError(
            f"a brush RLE starts with {HEADER_BITS} bits of header, this one has {len(data)} bytes"
        )
    return int.from_bytes(data[:4], "big")


def decode_brush(rle: Sequence[int], h: int, w: int) -> np.ndarray:
    """Label Studio brush RLE -> (H, W) bool, the pixels whose alpha is above 0. ValueError naming what
    is wrong when the RLE does not describe exactly an H x W RGBA image."""
    num = header_values(rle)
    data = _bytes(rle)
    end = 8 * len(data)
    word, sizes = _field(data, 32, 5) + 1, [_field(data, 37 + 4 * k, 4) + 1 for k in range(4)]
    if num != 4 * h * w:
        raise ValueError(f"the brush RLE holds {num} values; a {w}x{h} RGBA image holds {4 * h * w}")
    padded = data + bytes(8)  # a chunk's head (at most 1 + 2 + 16 + 32 bits) is read as one 64-bit window
    alpha = np.zeros(h * w, dtype=bool)
    i, pos = 0, HEADER_BITS
    while i < num:
        window = int.from_bytes(padded[pos // 8 : pos // 8 + 8], "big")
        rest = 64 - pos % 8  # the window's bits from pos on
        repeated, size = (window >> (rest - 1)) & 1, sizes[(window >> (rest - 3)) & 3]
        j = i + 1 + ((window >> (rest - 3 - size)) & ((1 << size) - 1))
        pos += 3 + size + (word if repeated else (j - i) * word)
        if pos > end:
            raise ValueError(f"the brush RLE ends inside a chunk (one reaches bit {pos}, it holds {end})")
        if j > num:
            raise ValueError(f"a run of the brush RLE ends at value {j}, past the {num} it holds")
        words = rest - 3 - size  # the window's bits after the chunk's head
        if repeated:
            if (window >> (words - word)) & ((1 << word) - 1):
                alpha[i // 4 : j // 4] = True  # the pixels p whose alpha 4p + 3 lies in [i, j)
        elif (j - i) * word <= words:  # a short list, within the window
            for k in range(i + (3 - i) % 4, j, 4):  # the alpha values among values i .. j - 1
                alpha[k // 4] = bool((window >> (words - (k - i + 1) * word)) & ((1 << word) - 1))
        else:
            values = _nonzero_words(data, pos - (j - i) * word, j - i, word)
            first = (3 - i) % 4
            alpha[(i + first) // 4 : (i + first) // 4 + len(values[first::4])] = values[first::4]
        i = j
    return alpha.reshape(h, w)


def encode_brush(mask: np.ndarray) -> list[int]:
    """(H, W) bool -> Label Studio brush RLE of the RGBA image whose four channels are 255 in the mask and
    0 elsewhere (the converter's ``mask2rle`` of ``mask * 255``): one repeated-word chunk per run, with
    the converter's choice of field sizes, so the bytes are the converter's but for its extra padding."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}.")
    flat = mask.astype(bool).ravel()
    num = 4 * flat.size
    out = [f"{num:032b}", f"{8 - 1:05b}", *(f"{b - 1:04b}" for b in RUN_BITS)]
    value = 0
    for run in run_lengths(flat):  # starts with a run of False, possibly empty
        length = 4 * run
        index = next((k for k, b in enumerate(RUN_BITS) if length <= 1 << b), len(RUN_BITS) - 1)
        while length > 0:  # a run longer than the largest field: several chunks of at most 2**16
            step = min(length, 1 << RUN_BITS[index])
            out.append(f"1{index:02b}{step - 1:0{RUN_BITS[index]}b}{value:08b}")
            length -= step
        value = 255 - value
    bits = "".join(out)
    bits += "0" * (-len(bits) % 8)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))


def _bytes(rle: Sequence[int]) -> bytes:
    if not isinstance(rle, list | tuple) or not all(isinstance(v, int) for v in rle):
        raise ValueError("a brush RLE is a list of byte values (integers 0 to 255)")
    try:
        return bytes(rle)
    except ValueError:
        raise ValueError("a brush RLE is a list of byte values (integers 0 to 255)") from None
