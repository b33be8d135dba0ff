"""PNG plots of a results.jsonl: accuracy vs round (one panel per attack, one line per
strategy), the defense x attack matrix, ALIE's sensitivity to m, z and n, the reputation of the malicious and the honest clients when a reputation layer
ran, and, when an ALIE attacker reported it, the forecast curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _latest_attempts(rows: list[dict]) -> list[dict]:
    latest: dict[str, str] = {}
    for r in rows:
        latest[r["cell"]] = r["attempt"]
    return [r for r in rows if latest.get(r["cell"]) == r["attempt"]]


def accuracy_curves(rows: list[dict], attack: str) -> dict[tuple, dict[int, list[float]]]:
    """The accuracy curves of one attack's panel: ``(strategy, n, m) -> round -> [accuracy
    of each seed]``. n and m are each run's (cell's) largest over its rows: a Flower App run
    reports the replies of each round (none for round 0, fewer when a node is late), and
    must still draw one line."""
    from .runner import attack_label, defense_label

    size: dict[str, tuple] = {}
    for r in rows:
        n, m = size.get(r["cell"], (0, 0))
        size[r["cell"]] = (max(n, r.get("cfg_num_clients") or 0), max(m, r.get("cfg_num_malicious") or 0))
    curves: dict[tuple, dict[int, list[float]]] = {}
    for r in rows:
        if attack_label(r) == attack:
            key = (defense_label(r), *size[r["cell"]])
            curves.setdefault(key, {}).setdefault(r["round"], []).append(r["accuracy"])
    return curves


def plot_matrix(rows: list[dict], path: Path) -> Path | None:
    """A defense x attack heatmap of last-20 accuracy (mean over seeds; the backdoors' cells
    also show their final ASR), written to ``path`` when the rows hold at least two defenses
    and two attacks; returns the path, or None when there is no matrix to draw."""
    from .report import over_seeds
    from .runner import summarize

    cells = over_seeds(summarize(rows))
    return draw_matrix({(c["strategy"], c["attack"]): (c["tail_accuracy_mean"], c.get("final_asr_mean"))
                        for c in cells}, path)


def draw_matrix(cells: dict[tuple[str, str], tuple[float, float | None]], path: Path) -> Path | None:
    """Draw the heatmap of :func:`plot_matrix` from ``(defense, attack) -> (accuracy, ASR or
    None)``: defenses sorted, attacks sorted after ``"none"``, a missing cell left blank;
    None (nothing written) when there are fewer than two defenses or two attacks."""
    import matplotlib.pyplot as plt

    defenses = sorted({d for d, _ in cells})
    attacks = sorted({a for _, a in cells}, key=lambda a: (a != "none", a))
    if len(defenses) < 2 or len(attacks) < 2:
        return None
    acc = np.full((len(defenses), len(attacks)), np.nan)
    asr: dict[tuple[int, int], float] = {}
    for (defense, attack), (accuracy, final_asr) in cells.items():
        i, j = defenses.index(defense), attacks.index(attack)
        acc[i, j] = accuracy
        if final_asr is not None:
            asr[i, j] = final_asr
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(attacks), 1.0 + 0.42 * len(defenses)))
    image = ax.imshow(np.ma.masked_invalid(acc), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(acc):
        if np.isfinite(v):
            text = f"{v:.2f}" + (f"\nASR {asr[i, j]:.2f}" if (i, j) in asr else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5 if (i, j) in asr else 7.5)
    ax.set_xticks(range(len(attacks)), attacks, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(defenses)), defenses, fontsize=8)
    ax.set_title("last-20 test accuracy (backdoors: and the final ASR)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sensitivity_curves(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """The ALIE sensitivity curves of a results folder (``flwr-byz reproduce alie-sensitivity``):
    ``defense -> axis -> {"x": [...], "mean", "min", "max": [...], "reference": no-attack
    level or None}`` for axis ``"m"`` (n = the base n, z = z_max(n, m)), ``"z"`` (the base
    n and m) and ``"n"`` (z = z_max(n, m), one m per n; the base point's m at the base n).
    The base n is the most common n of the ALIE runs, the base m the most common m there.
    y is the last-20 accuracy over seeds. An axis with fewer than three points is left out."""
    import re
    from collections import Counter

    from ..attacks import alie_z_max
    from .report import over_seeds
    from .runner import summarize

    cells = over_seeds(summarize(rows))
    alie = []
    for c in cells:
        hit = re.fullmatch(r"alie\(z=([-+0-9.eE]+)\)", str(c["attack"]))
        if hit:
            alie.append((c, float(hit.group(1))))
    if not alie:
        return {}
    n0 = Counter(c["num_clients"] for c, _ in alie).most_common(1)[0][0]
    m0 = Counter(c["num_malicious"] for c, _ in alie if c["num_clients"] == n0).most_common(1)[0][0]

    def at_z_max(c, z):
        return abs(z - round(float(alie_z_max(c["num_clients"], c["num_malicious"])), 4)) < 1e-9

    axes = {"m": lambda c, z: c["num_clients"] == n0 and at_z_max(c, z),
            "z": lambda c, z: c["num_clients"] == n0 and c["num_malicious"] == m0,
            "n": lambda c, z: at_z_max(c, z) and (c["num_clients"] != n0 or c["num_malicious"] == m0)}
    value = {"m": lambda c, z: c["num_malicious"], "z": lambda c, z: z, "n": lambda c, z: c["num_clients"]}
    out: dict[str, dict[str, dict]] = {}
    for defense in sorted({c["strategy"] for c, _ in alie}):
        clean = [c["tail_accuracy_mean"] for c in cells
                 if c["strategy"] == defense and c["attack"] == "none" and c["num_clients"] == n0]
        for axis, keep in axes.items():
            points = sorted((value[axis](c, z), c) for c, z in alie if c["strategy"] == defense and keep(c, z))
            if len({x for x, _ in points}) < 3:
                continue
            out.setdefault(defense, {})[axis] = {
                "x": [x for x, _ in points], "mean": [c["tail_accuracy_mean"] for _, c in points],
                "min": [c["tail_accuracy_min"] for _, c in points], "max": [c["tail_accuracy_max"] for _, c in points],
                "reference": float(np.mean(clean)) if clean else None, "n": n0, "m": m0}
    return out


def plot_sensitivity(rows: list[dict], path: Path) -> Path | None:
    """``sensitivity.png``: one row of panels per defense, one panel per axis of
    :func:`sensitivity_curves` (accuracy against m, z and n: the mean over seeds, a band from
    the lowest to the highest seed, the no-attack level dashed); None when there is none."""
    import matplotlib.pyplot as plt

    curves = sensitivity_curves(rows)
    if not curves:
        return None
    axis_names = [a for a in ("m", "z", "n") if any(a in by_axis for by_axis in curves.values())]
    titles = {"m": "corrupted clients m (n = {n}, z = z_max)", "z": "shift z (n = {n}, m = {m})",
              "n": "clients n (m = (n - 3) // 4, z = z_max)"}
    fig, axes = plt.subplots(len(curves), len(axis_names), figsize=(4.2 * len(axis_names), 3.0 * len(curves)),
                             squeeze=False, sharey=True)
    for i, (defense, by_axis) in enumerate(sorted(curves.items())):
        for j, axis in enumerate(axis_names):
            ax = axes[i][j]
            curve = by_axis.get(axis)
            if curve is None:
                ax.set_visible(False)
                continue
            line, = ax.plot(curve["x"], curve["mean"], marker="o", label="ALIE")
            if any(lo != hi for lo, hi in zip(curve["min"], curve["max"])):
                ax.fill_between(curve["x"], curve["min"], curve["max"], color=line.get_color(), alpha=0.2, linewidth=0)
            if curve["reference"] is not None:
                ax.axhline(curve["reference"], color="gray", linestyle="--", label="no attack")
            ax.set_title(f"{defense}", fontsize=9)
            ax.set_xlabel(titles[axis].format(n=curve["n"], m=curve["m"]), fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[i][0].set_ylabel("last-20 test accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_durability(rows: list[dict], path: Path) -> Path | None:
    """``durability.png`` for backdoor runs with an attack window (``--attack-rounds``): the
    ASR per round, one panel per defense, one line per attack (mean over seeds, a band
    from the lowest to the highest seed), the window's end dashed; None when there is none."""
    import matplotlib.pyplot as plt

    from .runner import LIFESPAN_ASR, attack_label, defense_label

    rows = [r for r in rows if r.get("cfg_attack_rounds") and r.get("asr") is not None]
    if not rows:
        return None
    defenses = sorted({defense_label(r) for r in rows})
    fig, axes = plt.subplots(1, len(defenses), figsize=(5 * len(defenses), 3.6), squeeze=False, sharey=True)
    for ax, defense in zip(axes[0], defenses):
        curves: dict[str, dict[int, list[float]]] = {}
        ends = set()
        for r in rows:
            if defense_label(r) == defense:
                label = attack_label(r).split(" [")[0]
                curves.setdefault(label, {}).setdefault(r["round"], []).append(r["asr"])
                ends.add(r["cfg_attack_rounds"])
        for label, by_round in sorted(curves.items()):
            rounds = sorted(by_round)
            line, = ax.plot(rounds, [float(np.mean(by_round[k])) for k in rounds], label=label)
            if max(len(v) for v in by_round.values()) > 1:
                ax.fill_between(rounds, [min(by_round[k]) for k in rounds], [max(by_round[k]) for k in rounds],
                                color=line.get_color(), alpha=0.2, linewidth=0)
        for end in ends:
            ax.axvline(end, color="gray", linestyle="--", linewidth=1)
        ax.axhline(LIFESPAN_ASR, color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"{defense} (attack until the dashed line)", fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("backdoor ASR")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_results(results: Path, out_dir: Path | None = None, forecast_rounds: int | None = None) -> list[Path]:
    """Write ``accuracy.png`` (one panel per attack, one line per defense: the mean over its
    seeds, a band from the lowest to the highest seed when there are several) and
    ``matrix.png`` (:func:`plot_matrix`) when the rows hold two defenses and two attacks or
    more, ``durability.png`` (:func:`plot_durability`) for backdoors with an attack window,
    ``sensitivity.png`` (:func:`plot_sensitivity`) for the ALIE sensitivity runs,
    ``reputation.png`` when a reputation layer ran (the mean score of the malicious and of
    the honest clients per round, one panel per cell), ``forecast.png`` when present (over
    the first ``forecast_rounds`` rounds if given); return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .runner import ResultsWriter, attack_label, defense_label

    results = Path(results)
    folder = results if results.is_dir() else results.parent
    rows = _latest_attempts(ResultsWriter(folder).rows())
    if not rows:
        raise ValueError(f"no results in {folder}")
    out_dir = Path(out_dir or folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    attacks = sorted({attack_label(r) for r in rows})
    fig, axes = plt.subplots(1, len(attacks), figsize=(5 * len(attacks), 4), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks):
        curves = accuracy_curves(rows, attack)
        for (strategy, n, m), by_round in sorted(curves.items()):
            rounds = sorted(by_round)
            values = [by_round[k] for k in rounds]
            seeds = max(len(v) for v in values)
            line, = ax.plot(rounds, [float(np.mean(v)) for v in values], marker="." if seeds == 1 else None,
                            label=f"{strategy} (n={n}, m={m})" + (f", {seeds} seeds" if seeds > 1 else ""))
            if seeds > 1:
                ax.fill_between(rounds, [min(v) for v in values], [max(v) for v in values],
                                color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(f"attack: {attack}")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("test accuracy")
    fig.tight_layout()
    files = [out_dir / "accuracy.png"]
    fig.savefig(files[0], dpi=120)
    plt.close(fig)
    for extra in (plot_matrix(rows, out_dir / "matrix.png"), plot_sensitivity(rows, out_dir / "sensitivity.png"),
                  plot_durability(rows, out_dir / "durability.png")):
        if extra is not None:
            files.append(extra)
    rep = [r for r in rows if r.get("reputation_malicious") is not None or r.get("reputation_honest") is not None]
    if rep:
        cells = sorted({r["cell"] for r in rep})
        cols = min(4, len(cells))
        nrows = -(-len(cells) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False, sharey=True)
        for ax in axes.flat[len(cells):]:
            ax.set_visible(False)
        for ax, cell in zip(axes.flat, cells):
            rs = sorted((r for r in rep if r["cell"] == cell), key=lambda r: r["round"])
            for key, label in (("reputation_honest", "honest"), ("reputation_malicious", "malicious")):
                ax.plot([r["round"] for r in rs], [r.get(key) for r in rs], marker=".", label=label)
            ax.set_title(f"{defense_label(rs[0])} / {attack_label(rs[0])}", fontsize=9)
            ax.set_xlabel("round")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        for row in axes:
            row[0].set_ylabel("mean reputation")
        fig.tight_layout()
        files.append(out_dir / "reputation.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    fc = [r for r in rows if any(k.startswith("forecast_") for k in r)]
    if fc:
        from .runner import _setting

        fig, ax = plt.subplots(figsize=(6, 4))
        setting = _setting(fc[0])  # the first cell that reported it, over its seeds
        rs = [r for r in fc if _setting(r) == setting and r["round"] <= (forecast_rounds or r["round"])]
        seeds = sorted({r.get("cfg_seed") for r in rs})
        for key in sorted({k for r in rs for k in r if k.startswith("forecast_")}, key=lambda k: float(k[10:])):
            by_round: dict[int, list[float]] = {}
            for r in rs:
                if r.get(key) is not None:
                    by_round.setdefault(r["round"], []).append(r[key])
            rounds = sorted(by_round)
            line, = ax.plot(rounds, [float(np.mean(by_round[k])) for k in rounds],
                            label="z = " + key.removeprefix("forecast_z"))
            if len(seeds) > 1:
                ax.fill_between(rounds, [min(by_round[k]) for k in rounds], [max(by_round[k]) for k in rounds],
                                color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("round")
        ax.set_ylabel("fraction of coordinates with |mu| < z sigma")
        ax.set_title(f"ALIE forecast ({rs[0]['cfg_strategy']}"
                     + (f", seeds {','.join(map(str, seeds))}: mean and range)" if len(seeds) > 1 else ")"))
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        files.append(out_dir / "forecast.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    return files
