"""Markdown tables (mean ± std over seeds) from the benchmark's JSON log, and BENCHMARKS.md updating."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gtcorrect.quality import contradictions

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
METHOD_ORDER = {"clean": 0, "noisy": 1, "gmm_select": 2, "coteaching": 3, "gt": 4}

Getter = Callable[[dict[str, Any]], float | None]


def _get(*path: str) -> Getter:
    def get(rec: dict[str, Any]) -> float | None:
        value: Any = rec
        for p in path:
            if not isinstance(value, dict) or value.get(p) is None:
                return None
            value = value[p]
        return float(value)

    return get


def mean_std(values: Sequence[float | None], digits: int = 3) -> str:
    """'0.781 ± 0.004' over the defined values (sample std), '0.781' for one value, '–' for none."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


def _mean(values: Sequence[float | None], digits: int = 2) -> str:
    """Mean of the defined values, '–' for none."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    return f"{np.mean(v):.{digits}f}" if v else "–"


def _separations(recs: list[dict[str, Any]]) -> str:
    """Mean separation S per GMM round over seeds, 'S0→S1→…'."""
    per_round: dict[int, list[float]] = {}
    for r in recs:
        for rnd in r.get("rounds") or []:
            if rnd.get("separation") is not None:
                per_round.setdefault(int(rnd["round"]), []).append(float(rnd["separation"]))
    if not per_round or all(len(v) == 0 for v in per_round.values()):
        return "–"
    keys = sorted(per_round)
    if len(keys) > 6:  # gmm_select re-splits every epoch: show first, middle, last
        keys = [keys[0], keys[len(keys) // 2], keys[-1]]
    return "→".join(f"{np.mean(per_round[k]):.2f}" for k in keys)


def _col(get: Getter, digits: int) -> Callable[[list[dict[str, Any]]], str]:
    return lambda recs: mean_std([get(r) for r in recs], digits)


def _pair(a: Getter, b: Getter, digits: int) -> Callable[[list[dict[str, Any]]], str]:
    return lambda recs: f"{mean_std([a(r) for r in recs], digits)} → {mean_std([b(r) for r in recs], digits)}"


COLUMNS: list[tuple[str, Callable[[list[dict[str, Any]]], str]]] = [
    ("test Dice", _col(_get("test", "dice"), 3)),
    ("test IoU", _col(_get("test", "iou"), 3)),
    ("HD95 px", _col(_get("test", "hd95"), 1)),
    ("rec. acc", _col(_get("recognition", "accuracy"), 3)),
    ("AUROC", _col(_get("recognition", "auroc"), 3)),
    ("F1", _col(_get("recognition", "f1"), 3)),
    ("est. / true noise", _pair(_get("recognition", "estimated_noise_rate"), _get("spec", "alpha"), 2)),
    (
        "Dice noisy → corrected (flagged)",
        _pair(_get("correction", "dice_noisy"), _get("correction", "dice_corrected"), 3),
    ),
    (
        "same, truly noisy flagged",
        _pair(
            _get("correction_true_noisy", "dice_noisy"), _get("correction_true_noisy", "dice_corrected"), 3
        ),
    ),
    ("change P", _col(_get("correction", "change_precision"), 2)),
    ("change R", _col(_get("correction", "change_recall"), 2)),
    ("S per round", _separations),
    ("pixel noise", _col(_get("noise", "mean_pixel_noise"), 3)),
    ("wall s", _col(_get("wall_s"), 0)),
]


GroupKey = tuple[str, float, str, str]


def _groups(runs: dict[str, dict[str, Any]]) -> list[tuple[GroupKey, list[dict[str, Any]]]]:
    """Records grouped by (regime, alpha, method, variant), in table order."""
    groups: dict[GroupKey, list[dict[str, Any]]] = {}
    for rec in runs.values():
        spec = rec["spec"]
        groups.setdefault((spec["regime"], spec["alpha"], spec["method"], spec["variant"]), []).append(rec)
    order = sorted(groups, key=lambda k: (k[0] != "none", k[0], k[1], METHOD_ORDER.get(k[2], 9), k[3]))
    return [(key, groups[key]) for key in order]


KEY_HEAD = ["regime", "alpha", "method", "variant", "seeds"]


def _key_cells(key: GroupKey, recs: list[dict[str, Any]]) -> list[str]:
    regime, alpha, method, variant = key
    return [regime, f"{alpha:g}", method, variant, str(len(recs))]


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def table(runs: dict[str, dict[str, Any]]) -> str:
    """One row per (regime, alpha, method, variant), aggregated over seeds."""
    head = [*KEY_HEAD, *(name for name, _ in COLUMNS)]
    rows = [[*_key_cells(key, recs), *(fmt(recs) for _, fmt in COLUMNS)] for key, recs in _groups(runs)]
    return markdown_table(head, rows)


def type_table(runs: dict[str, dict[str, Any]]) -> str:
    """Recognition per corruption type, one row per group with a split: the share of that type's masks
    flagged (recall), the AUROC of that type against the clean masks and the type's mean pixel noise,
    means over seeds; '' when no run has per-type figures."""
    groups = [(k, recs) for k, recs in _groups(runs) if all(r.get("recognition_by_type") for r in recs)]
    if not groups:
        return ""
    kinds = sorted({t for _, recs in groups for r in recs for t in r["recognition_by_type"]})
    head = [*KEY_HEAD, *(f"{t}: recall / AUROC / pixel noise" for t in kinds)]
    rows = []
    for key, recs in groups:
        cells = _key_cells(key, recs)
        for t in kinds:
            paths: tuple[tuple[str, ...], ...] = (
                ("recognition_by_type", t, "recall"),
                ("recognition_by_type", t, "auroc"),
                ("noise", "by_type", t, "pixel_noise"),
            )
            cells.append(" / ".join(_mean([_get(*path)(r) for r in recs]) for path in paths))
        rows.append(cells)
    return markdown_table(head, rows)


def damage_table(runs: dict[str, dict[str, Any]]) -> str:
    """Recognition of the badly wrong and the mild wrong masks (``recognition_by_damage``), one row per
    group with a split: how many, the share flagged and the AUROC against the clean masks, means over
    seeds; '' when no run has these figures."""
    groups = [(k, recs) for k, recs in _groups(runs) if all(r.get("recognition_by_damage") for r in recs)]
    if not groups:
        return ""
    bands = list(groups[0][1][0]["recognition_by_damage"])
    head = [*KEY_HEAD, *(f"{b}: n / recall / AUROC" for b in bands)]
    rows = []
    for key, recs in groups:
        cells = _key_cells(key, recs)
        for b in bands:
            figures = [
                _mean([r["recognition_by_damage"][b][f] for r in recs]) for f in ("n", "recall", "auroc")
            ]
            cells.append(" / ".join(figures))
        rows.append(cells)
    return markdown_table(head, rows)


def flips_table(runs: dict[str, dict[str, Any]]) -> str:
    """Test Dice as trained and with the network averaged over each test image's flips (``test_flips``),
    each seed's figure "a / b", per label with each volume's slices pooled where the runs are of volumes;
    '' when no run has the flipped figures."""
    groups = [(k, recs) for k, recs in _groups(runs) if all(r.get("test_flips") is not None for r in recs)]
    if not groups:
        return ""
    names = list(dict.fromkeys(n for _, recs in groups for r in recs for n in r.get("test_per_volume") or {}))
    fields = [(("test", "dice"), ("test_flips",), "test Dice")] + [
        (("test_per_volume", n), ("test_per_volume_flips", n), f"{n} (volumes)") for n in names
    ]
    head = [*KEY_HEAD, *(f"{what}: as trained → flips" for _, _, what in fields)]
    rows = []
    for key, recs in groups:
        cells = _key_cells(key, recs)
        for plain, flipped, _ in fields:
            cells.append(
                " / ".join(_mean([_get(*plain)(r)], 3) for r in recs)
                + " → "
                + " / ".join(_mean([_get(*flipped)(r)], 3) for r in recs)
            )
        rows.append(cells)
    return markdown_table(head, rows)


def class_table(runs: dict[str, dict[str, Any]]) -> str:
    """Test Dice per foreground label, one row per group: over the test images (``test_per_class``) and,
    for volumes trained slice-wise, with each volume's slices pooled (``test_per_volume``), each seed's
    figure "a / b"; '' when the runs have a single label and no volumes."""
    groups = _groups(runs)
    names = list(dict.fromkeys(n for _, recs in groups for r in recs for n in r.get("test_per_class") or {}))
    volumes = any(r.get("test_per_volume") for _, recs in groups for r in recs)
    if len(names) < 2 and not volumes:
        return ""
    parts = (
        (("test_per_class", "images"), ("test_per_volume", "volumes"))
        if volumes
        else (("test_per_class", ""),)
    )
    head = [*KEY_HEAD, *(f"{n}{f' ({what})' if what else ''}" for n in names for _, what in parts)]
    rows = []
    for key, recs in groups:
        cells = _key_cells(key, recs)
        for n in names:
            for field, _ in parts:
                cells.append(" / ".join(_mean([_get(field, n)(r)], 3) for r in recs))
        rows.append(cells)
    return markdown_table(head, rows)


def size_table(runs: dict[str, dict[str, Any]]) -> str:
    """Recognition per quantile of the true object area, one row per group: AUROC, share of clean masks
    flagged (both '–' for methods without a split) and median predicted / true area of the clean masks,
    means over seeds; '' when no run has these figures."""
    groups = [(k, recs) for k, recs in _groups(runs) if all(r.get("recognition_by_size") for r in recs)]
    if not groups:
        return ""
    first = groups[0][1][0]["recognition_by_size"]
    head = [*KEY_HEAD, *(f"area {b['area_min']:.0f}-{b['area_max']:.0f} px" for b in first)]
    rows = []
    for key, recs in groups:
        cells = _key_cells(key, recs)
        for i in range(len(first)):
            figures = [
                _mean([r["recognition_by_size"][i][key] for r in recs])
                for key in ("auroc", "clean_flagged", "pred_area_ratio")
            ]
            cells.append(" / ".join(figures))
        rows.append(cells)
    return markdown_table(head, rows)


def _share(get: Getter, recs: list[dict[str, Any]]) -> str:
    """'k/n': in how many of the n runs the figure is true."""
    return f"{sum(1 for r in recs if get(r))}/{len(recs)}"


def _applied(rec: dict[str, Any]) -> float | None:
    status = ((rec.get("quality") or {}).get("corrections") or {}).get("status")
    return None if status is None else float(status == "applied")


def _interval(recs: list[dict[str, Any]]) -> str:
    bounds = [r["quality"].get("noise_rate_interval") for r in recs]
    bounds = [b for b in bounds if b]
    if not bounds:
        return "–"
    return f"[{np.mean([b[0] for b in bounds]):.2f}, {np.mean([b[1] for b in bounds]):.2f}]"


def _proposed(which: str) -> Getter:
    """Mean Dice against the truth over the masks given a correction, of the given mask ("given") or of
    the correction ("corrected"), from the run's per-sample record; None without proposals."""

    def get(rec: dict[str, Any]) -> float | None:
        per = rec.get("per_sample") or {}
        chosen = [
            per[f"dice_{which}"][i]
            for i, p in enumerate(per.get("proposed") or [])
            if p and per["dice_corrected"][i] is not None
        ]
        return float(sum(chosen) / len(chosen)) if chosen else None

    return get


def _true_false_flags(rec: dict[str, Any]) -> float | None:
    """The true share of correct masks among the flagged ones (1 - precision)."""
    precision = (rec.get("recognition") or {}).get("precision")
    return None if precision is None else 1.0 - float(precision)


def _min_transfer(rec: dict[str, Any]) -> float | None:
    transfer = ((rec.get("quality") or {}).get("selftest") or {}).get("transfer") or {}
    return min(transfer.values()) if transfer else None


def _bias(recs: list[dict[str, Any]]) -> str:
    """The annotator check (gtcorrect.bias): masks flagged, moved back, vetoed and learnt from moved back
    (bias-aware training; runs before it count none), means over runs."""
    found = [(r.get("quality") or {}).get("annotator_bias") for r in recs]
    if not any(found):
        return "–"
    keys = ("flagged", "proposed", "vetoed", "trained_moved")
    sums = [[sum(f.get(k, 0) for f in (x or [])) for k in keys] for x in found]
    return " / ".join(f"{np.mean([s[i] for s in sums]):.0f}" for i in range(len(keys)))


QUALITY_COLUMNS: list[tuple[str, Callable[[list[dict[str, Any]]], str]]] = [
    ("noise evidence", lambda recs: _share(_get("quality", "noise_evidence"), recs)),
    ("flagged / true noise", _pair(_get("recognition", "estimated_noise_rate"), _get("spec", "alpha"), 2)),
    ("noise-rate interval", _interval),
    ("S final", _col(_get("quality", "separation"), 2)),
    ("annotator check: flagged / moved back / vetoed / learnt moved", _bias),
    ("false-flag est. / true", _pair(_get("quality", "false_flag_rate"), _true_false_flags, 2)),
    ("held-out Dice (given masks)", _col(_get("quality", "validation", "dice"), 3)),
    (
        "self-test recall / true recall",
        _pair(_get("quality", "selftest", "recall"), _get("recognition", "recall"), 2),
    ),
    ("self-test recall, family left out (min)", _col(_min_transfer, 2)),
    (
        "self-test Dice corrupted → corrected",
        _pair(
            _get("quality", "selftest", "correction", "dice_corrupted"),
            _get("quality", "selftest", "correction", "dice_corrected"),
            3,
        ),
    ),
    ("corrections applied", lambda recs: _share(_applied, recs)),
    ("proposed", _col(_get("handed_back", "n_proposed"), 0)),
    ("proposed masks: given → corrected", _pair(_proposed("given"), _proposed("corrected"), 3)),
    (
        "all masks: given → handed back",
        _pair(_get("handed_back", "dice_given"), _get("handed_back", "dice_output"), 3),
    ),
    ("all masks, ungated", _col(_get("handed_back", "dice_ungated"), 3)),
    ("summary consistent", lambda recs: _share(lambda r: not contradictions(r["quality"]), recs)),
]


def quality_table(runs: dict[str, dict[str, Any]]) -> str:
    """The job's self-assessment against the truth, one row per group whose runs report a quality with
    a split; '' when none does."""
    groups = [
        (k, recs)
        for k, recs in _groups(runs)
        if all((r.get("quality") or {}).get("noise_evidence") is not None for r in recs)
    ]
    if not groups:
        return ""
    head = [*KEY_HEAD, *(name for name, _ in QUALITY_COLUMNS)]
    rows = [[*_key_cells(key, recs), *(fmt(recs) for _, fmt in QUALITY_COLUMNS)] for key, recs in groups]
    return markdown_table(head, rows)


def annotator_table(runs: dict[str, dict[str, Any]]) -> str:
    """The annotator report with the simulated noise as annotator "noisy": is it the suspect, its offset
    relative to the clean masks (original pixels = training pixels here), and the verdict of seed 0."""
    groups = [(k, recs) for k, recs in _groups(runs) if all(r.get("annotators") for r in recs)]
    if not groups:
        return ""

    def noisy(rec: dict[str, Any]) -> dict[str, Any] | None:
        return next((a for a in rec["annotators"] if a["annotator"] == "noisy"), None)

    head = [
        *KEY_HEAD,
        "noisy named suspect",
        "clean named suspect",
        "noisy: offset vs clean px",
        "verdict (first seed)",
    ]
    rows = []
    for key, recs in groups:
        found = [noisy(r) for r in recs]
        clean = [next(a for a in r["annotators"] if a["annotator"] == "clean") for r in recs]
        offsets = [f["relative_offset_px"] if f else None for f in found]
        rows.append(
            [
                *_key_cells(key, recs),
                f"{sum(bool(f and f['suspect']) for f in found)}/{len(recs)}",
                f"{sum(bool(c['suspect']) for c in clean)}/{len(recs)}",
                mean_std(offsets, 2),
                (found[0] or {}).get("verdict", "–"),
            ]
        )
    return markdown_table(head, rows)


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appended if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    path.write_text(text)


def section(title: str, command: str, log: dict[str, Any], body: str, notes: Sequence[str] = ()) -> str:
    """A titled block: the command, the machine, the settings, the table."""
    m = log["machine"]
    lines = [
        f"### {title}",
        "",
        "Command:",
        "```",
        command,
        "```",
        f"Machine: {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} thread(s)), "
        f"device {m['device']}, {m['platform']}.",
        f"Settings: `{_settings_text(log['settings'])}`.",
        *notes,
        "",
        body,
    ]
    return "\n".join(lines)


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
