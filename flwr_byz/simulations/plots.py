"""PNG plots of a results.jsonl: accuracy vs round (one panel per attack, one line per
strategy), the reputation of the malicious and the honest clients when a reputation layer
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
    import matplotlib.pyplot as plt

    from .report import over_seeds
    from .runner import summarize

    cells = over_seeds(summarize(rows))
    defenses = sorted({c["strategy"] for c in cells})
    attacks = sorted({c["attack"] for c in cells}, key=lambda a: (a != "none", a))
    if len(defenses) < 2 or len(attacks) < 2:
        return None
    acc = np.full((len(defenses), len(attacks)), np.nan)
    asr: dict[tuple[int, int], float] = {}
    for c in cells:
        i, j = defenses.index(c["strategy"]), attacks.index(c["attack"])
        acc[i, j] = c["tail_accuracy_mean"]
        if c.get("final_asr_mean") is not None:
            asr[i, j] = c["final_asr_mean"]
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


def plot_results(results: Path, out_dir: Path | None = None, forecast_rounds: int | None = None) -> list[Path]:
    """Write ``accuracy.png`` (one panel per attack, one line per defense: the mean over its
    seeds, a band from the lowest to the highest seed when there are several) and
    ``matrix.png`` (:func:`plot_matrix`) when the rows hold two defenses and two attacks or
    more, ``reputation.png`` when a reputation layer ran (the mean score of the malicious and of
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
    matrix = plot_matrix(rows, out_dir / "matrix.png")
    if matrix is not None:
        files.append(matrix)
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
        fig, ax = plt.subplots(figsize=(6, 4))
        cell = fc[0]["cell"]
        rs = sorted((r for r in fc if r["cell"] == cell and r["round"] <= (forecast_rounds or r["round"])),
                    key=lambda r: r["round"])
        for key in sorted({k for r in rs for k in r if k.startswith("forecast_")}, key=lambda k: float(k[10:])):
            ax.plot([r["round"] for r in rs], [r.get(key) for r in rs], label="z = " + key.removeprefix("forecast_z"))
        ax.set_xlabel("round")
        ax.set_ylabel("fraction of coordinates with |mu| < z sigma")
        ax.set_title(f"ALIE forecast ({rs[0]['cfg_strategy']})")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        files.append(out_dir / "forecast.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    return files
