"""Results over seeds, and the markdown tables of docs/RESULTS.md generated from a results
folder (``flwr-byz report <folder>``), so that a rerun replaces a table instead of a person
retyping it."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

# what identifies one experiment cell across seeds
GROUP_KEYS = ("strategy", "attack", "num_clients", "num_malicious", "dataset", "rounds")
METRICS = ("tail_accuracy", "final_accuracy", "best_accuracy", "final_asr", "attack_end_asr", "asr_lifespan")


def over_seeds(summary: list[dict]) -> list[dict]:
    """One row per cell of :data:`GROUP_KEYS`, over its seeds: for each metric of
    :data:`METRICS`, ``<metric>_mean``, ``_min`` and ``_max`` (None when no seed has it),
    plus ``seeds`` (sorted) and ``runs``."""
    groups: dict[tuple, list[dict]] = {}
    for s in summary:  # one cell: the same configuration but for the seed
        groups.setdefault(tuple(s.get(k) for k in GROUP_KEYS + ("setting",)), []).append(s)
    out = []
    for key, runs in groups.items():
        row = dict(zip(GROUP_KEYS, key))
        row["partitioning"] = runs[0].get("partitioning")
        row["seeds"] = sorted(r.get("seed") for r in runs if r.get("seed") is not None)
        row["runs"] = len(runs)
        for m in METRICS:
            values = [float(r[m]) for r in runs if r.get(m) is not None]
            row[f"{m}_mean"] = float(np.mean(values)) if values else None
            row[f"{m}_min"] = min(values) if values else None
            row[f"{m}_max"] = max(values) if values else None
        row["skipped_rounds"] = sum(int(r.get("skipped_rounds") or 0) for r in runs)
        row["lifespan_censored"] = any(r.get("asr_lifespan_censored") for r in runs)
        row["code_version"] = ", ".join(sorted({str(r.get("code_version")) for r in runs}))
        row["threads"] = ", ".join(sorted({str(r.get("threads") or "unrecorded") for r in runs}))
        row["environments"] = sorted({str(r.get("environment") or "unrecorded") for r in runs})
        row["commands"] = sorted({r["command"] for r in runs if r.get("command")})
        out.append(row)
    return sorted(out, key=lambda r: (r["dataset"], r["num_clients"], r["num_malicious"], r["attack"], r["strategy"]))


def spread(row: dict, metric: str) -> str:
    """``mean`` for one seed, ``mean [min, max]`` over several, ``-`` when missing (rounds
    with one decimal, the rest with three)."""
    if row.get(f"{metric}_mean") is None:
        return "-"
    digits = 1 if metric == "asr_lifespan" else 3
    text = f"{row[f'{metric}_mean']:.{digits}f}"
    if row["runs"] > 1:
        text += f" [{row[f'{metric}_min']:.{digits}f}, {row[f'{metric}_max']:.{digits}f}]"
    if metric == "asr_lifespan" and row.get("lifespan_censored"):
        text += " (alive at the end)"
    return text


METRIC_TEXT = {"tail_accuracy": "Test accuracy, mean of the last 20 evaluated rounds (all of them in shorter runs)",
               "final_accuracy": "Test accuracy after the last round",
               "best_accuracy": "Best test accuracy over the rounds (the ALIE authors' \"max accuracy\")",
               "asr_lifespan": "Rounds the backdoor's attack success rate stays at or above 0.5 after the attack's "
                               "last round (its lifespan, Neurotoxin's durability)"}


def _check_metric(metric: str) -> None:
    if metric not in METRIC_TEXT:
        raise ValueError(f"unknown metric {metric!r}; choose from {tuple(METRIC_TEXT)}")


def pivot_table(cells: dict[tuple[str, str], str]) -> str:
    """A defense x attack markdown table from ``(defense, attack) -> cell text``: defenses
    sorted, attacks sorted after ``"none"``, "-" where a cell is missing."""
    attacks = sorted({a for _, a in cells}, key=lambda a: (a != "none", a))
    lines = ["| defense | " + " | ".join(attacks) + " |", "|" + "---|" * (len(attacks) + 1)]
    for d in sorted({d for d, _ in cells}):
        lines.append(f"| {d} | " + " | ".join(cells.get((d, a), "-") for a in attacks) + " |")
    return "\n".join(lines) + "\n"


def read_pivot_table(text: str) -> dict[tuple[str, str], str]:
    """The cells of the first table :func:`pivot_table` wrote in ``text`` (a docs/RESULTS.md
    block), ``(defense, attack) -> cell text``; "-" cells (not run) are left out. Raises
    ValueError when ``text`` holds no such table (none, or a by-cell table of
    :func:`markdown_table`, whose second column is ``attack``), when the header has no
    separator line below it, or when a row has another number of cells than the header."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("|")
                     and line.strip("|").split("|")[0].strip() == "defense")
    except StopIteration:
        raise ValueError("no defense x attack table in the text") from None
    attacks = [a.strip() for a in lines[start].strip("|").split("|")][1:]
    if attacks[:1] == ["attack"]:
        raise ValueError("a by-cell table (one row per cell), not a defense x attack table")
    if start + 1 >= len(lines) or not set(lines[start + 1]) <= set("|-: "):
        raise ValueError(f"no separator line under the header {lines[start]!r}")
    cells = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        values = [v.strip() for v in line.strip("|").split("|")]
        if len(values) != len(attacks) + 1:
            raise ValueError(f"a row with {len(values)} cells under a header of {len(attacks) + 1}: {line!r}")
        cells.update({(values[0], a): v for a, v in zip(attacks, values[1:]) if v != "-"})
    return cells


def cell_numbers(text: str) -> tuple[float, float | None]:
    """``(value, ASR or None)`` of a table cell: the leading number (a mean over seeds when a
    [min, max] follows) and the number after "ASR", e.g. ``"0.850 [0.800, 0.900] (ASR 0.300)"``
    -> ``(0.85, 0.3)``. Raises ValueError on a cell without a leading number."""
    import re

    number = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan)"
    hit = re.match(r"\s*" + number, text)
    if not hit:
        raise ValueError(f"not a table cell with a number: {text!r}")
    asr = re.search(r"\(ASR " + number, text)
    return float(hit.group(1)), (float(asr.group(1)) if asr else None)


def markdown_table(rows: list[dict], *, pivot: bool = True, metric: str = "tail_accuracy") -> str:
    """The table of a results folder: with ``pivot`` (and one cell per defense and attack),
    one row per defense and one column per attack (``metric``, by default the last-20
    accuracy, mean [min, max] over seeds; ASR for the backdoors), else one row per cell
    (with the data split when the cells differ in it)."""
    _check_metric(metric)
    if not rows:
        return "(no finished runs)\n"
    backdoor = any(r.get("final_asr_mean") is not None for r in rows)
    unique = len({(r["strategy"], r["attack"]) for r in rows}) == len(rows)
    if pivot and unique:
        cells = {}
        for r in rows:
            v = spread(r, metric)
            if metric == "asr_lifespan" and r.get("attack_end_asr_mean") is not None:
                v += f" (ASR at the attack's end {spread(r, 'attack_end_asr')})"
            elif r.get("final_asr_mean") is not None:
                v += f" (ASR {spread(r, 'final_asr')})"
            cells[r["strategy"], r["attack"]] = v + (" (rounds skipped)" if r["skipped_rounds"] else "")
        return pivot_table(cells)
    split = len({r.get("partitioning") for r in rows}) > 1
    head = ("| defense | attack | n | m |" + (" data split |" if split else "")
            + " seeds | last-20 accuracy | final accuracy |" + (" ASR |" if backdoor else ""))
    lines = [head, "|" + "---|" * (7 + split + backdoor)]
    for r in rows:
        line = (f"| {r['strategy']} | {r['attack']} | {r['num_clients']} | {r['num_malicious']} | "
                + (f"{r.get('partitioning')} | " if split else "") +
                f"{','.join(map(str, r['seeds']))} | {spread(r, 'tail_accuracy')} | {spread(r, 'final_accuracy')} |")
        if backdoor:
            line += f" {spread(r, 'final_asr')} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def report(folders, *, pivot: bool = True, metric: str = "tail_accuracy") -> str:
    """The markdown block for docs/RESULTS.md from one results folder or several (their
    runs pooled): comment lines naming the folders, the date, the code version(s), the thread
    counts, the environment(s) (:func:`~flwr_byz.simulations.provenance.environment`;
    "unrecorded" for runs made before it was recorded) and the commands, a sentence saying
    what the numbers are, then :func:`markdown_table`."""
    _check_metric(metric)
    from .runner import ResultsWriter, summarize

    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    missing = [str(f) for f in folders if not f.exists()]
    if missing:
        raise FileNotFoundError(f"no such results folder: {', '.join(missing)}")
    folders = [f if f.is_dir() else f.parent for f in folders]
    summary = []
    for folder in folders:
        if not (folder / "results.jsonl").exists():
            raise FileNotFoundError(f"no results.jsonl in {folder}")
        summary += summarize(ResultsWriter(folder).rows())
    rows = over_seeds(summary)
    if not rows:
        raise ValueError(f"no finished runs in {', '.join(map(str, folders))}")
    folder = " ".join(map(str, folders))
    versions = sorted({v for r in rows for v in r["code_version"].split(", ")})
    threads = sorted({t for r in rows for t in r["threads"].split(", ")})
    commands = sorted({c for r in rows for c in r["commands"]})
    seeds = sorted({s for r in rows for s in r["seeds"]})
    when = _dt.date.today().isoformat()
    flag = (" --by-cell" if not pivot else "") + (f" --metric {metric}" if metric != "tail_accuracy" else "")
    environments = sorted({e for r in rows for e in r["environments"]})
    made = (f"code {', '.join(versions)}; threads (torch/BLAS) {', '.join(threads)}; "
            f"environment {'; '.join(environments)}")
    head = (f"<!-- generated by `flwr-byz report {folder}{flag}` on {when}; {made}; "
            f"seeds {','.join(map(str, seeds))} -->\n")
    if commands:
        head += "".join(f"<!-- run: {c} -->\n" for c in commands)
    note = (f"{METRIC_TEXT[metric]}; "
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
            + (" (mean [min, max] over seeds)" if len(seeds) > 1 else "") + f"; {made}.\n\n")
    return head + note + markdown_table(rows, pivot=pivot, metric=metric)


def forecast_table(folders, rounds=(1, 11, 25)) -> str:
    """The ALIE attacker's forecast (the fraction of coordinates with |mu_j| < z sigma_j over
    the corrupted clients' own updates, as they report it) at ``rounds``, as the markdown
    block for docs/RESULTS.md: one table per attacked cell that reported it (defense /
    attack), one row per round, one column per z, mean [min, max] over the cell's seeds."""
    from .runner import ResultsWriter, _setting, attack_label, defense_label

    folders = [Path(f) for f in ([folders] if isinstance(folders, (str, Path)) else folders)]
    rows = []
    for folder in folders:
        folder = folder if folder.is_dir() else folder.parent
        if not (folder / "results.jsonl").exists():
            raise FileNotFoundError(f"no results.jsonl in {folder}")
        latest: dict = {}
        every = ResultsWriter(folder).rows()
        for r in every:
            latest[r["cell"]] = r["attempt"]
        rows += [r for r in every if latest[r["cell"]] == r["attempt"] and any(k.startswith("forecast_") for k in r)]
    if not rows:
        raise ValueError(f"no forecast in {', '.join(map(str, folders))} (an ALIE cell reports it)")
    cells: dict[str, list[dict]] = {}
    for r in rows:
        cells.setdefault(_setting(r), []).append(r)
    when = _dt.date.today().isoformat()
    flag = ",".join(map(str, rounds))
    out = [f"<!-- generated by `flwr-byz report {' '.join(map(str, folders))} --forecast {flag}` on {when} -->"]
    for group in cells.values():
        keys = sorted({k for r in group for k in r if k.startswith("forecast_")}, key=lambda k: float(k[10:]))
        seeds = sorted({r.get("cfg_seed") for r in group})
        out.append(f"\n{defense_label(group[0])} / {attack_label(group[0])}, seeds {','.join(map(str, seeds))}:\n")
        out.append("| round | " + " | ".join("z = " + k.removeprefix("forecast_z") for k in keys) + " |")
        out.append("|" + "---|" * (len(keys) + 1))
        for k in rounds:
            at = [r for r in group if r["round"] == k]
            values = []
            for key in keys:
                v = [float(r[key]) for r in at if r.get(key) is not None]
                summary = {"runs": len(v), "x_mean": float(np.mean(v)) if v else None,
                           "x_min": min(v) if v else None, "x_max": max(v) if v else None}
                values.append(spread(summary, "x"))
            out.append(f"| {k} | " + " | ".join(values) + " |")
    return "\n".join(out) + "\n"
