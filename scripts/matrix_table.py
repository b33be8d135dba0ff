"""Merge new cells into a defense x attack table recorded in docs/RESULTS.md, and draw the
heatmap from the recorded table itself.

For a matrix made over several sittings whose earlier results folders are gone (``results/``
is not kept): the numbers of the finished cells survive only in the table, so the new cells
are merged into it and the heatmap is drawn from it (the same drawing as ``flwr-byz plot``).

    .venv/bin/flwr-byz report results/matrix-mnist-3 results/matrix-mnist-4 --out /tmp/new.md
    .venv/bin/python scripts/matrix_table.py matrix-mnist-table --add /tmp/new.md \
        --png docs/img/matrix-mnist.png

The block between ``<!-- BLOCK:start -->`` and ``<!-- BLOCK:end -->`` holds one pivoted table
(``flwr-byz report`` without ``--by-cell``). It keeps its comment and prose lines and gains
those of the added report that it does not hold yet; its table becomes the union of the
cells, an added cell replacing the recorded one of the same defense and attack. Both must
show the same metric (the prose's first words), and every cell must hold a number; the
document is written only when all of that holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flwr_byz.simulations.plots import draw_matrix
from flwr_byz.simulations.report import METRIC_TEXT, cell_numbers, pivot_table, read_pivot_table


def metric_of(prose: list[str]) -> str | None:
    """The metric a block's prose names (its first line starts with one of ``METRIC_TEXT``)."""
    first = prose[0] if prose else ""
    return next((k for k, text in METRIC_TEXT.items() if first.startswith(text.split(" (")[0])), None)


def split_block(text: str) -> tuple[list[str], list[str], dict]:
    """A report block's comment lines, its prose lines and its table's cells."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("|")]
    return ([line for line in lines if line.startswith("<!--")], [line for line in lines if not line.startswith("<!--")],
            read_pivot_table(text))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("block", help="the table's marker in the document, e.g. matrix-mnist-table")
    p.add_argument("--doc", default="docs/RESULTS.md", help="the document holding the block (default: %(default)s)")
    p.add_argument("--add", default=None, help="a `flwr-byz report` output whose cells replace or join the block's")
    p.add_argument("--png", default=None, help="draw the block's heatmap to this PNG")
    args = p.parse_args()

    doc = Path(args.doc)
    text = doc.read_text()
    start, end = f"<!-- {args.block}:start -->", f"<!-- {args.block}:end -->"
    if start not in text or end not in text:
        p.error(f"{doc} has no block {args.block!r}")
    before, rest = text.split(start, 1)
    block, after = rest.split(end, 1)
    try:
        comments, prose, cells = split_block(block)
        if args.add:
            added_comments, added_prose, added = split_block(Path(args.add).read_text())
            if metric_of(prose) != metric_of(added_prose):
                p.error(f"the block shows {metric_of(prose)}, {args.add} shows {metric_of(added_prose)}")
            cells.update(added)
        numbers = {k: cell_numbers(v) for k, v in cells.items()}
    except ValueError as e:
        p.error(str(e))
    if args.add:
        comments += [c for c in added_comments if c not in comments]
        prose += [c for c in added_prose if c not in prose]
        block = "\n".join(["", *comments, "\n\n".join(prose), "", pivot_table(cells)])
        doc.write_text(before + start + block + end + after)
        print(f"{doc}: {args.block} now holds {len(cells)} cells ({len(added)} added or replaced)")
    if args.png:
        path = draw_matrix(numbers, Path(args.png))
        print(f"wrote {path}" if path else "fewer than two defenses or two attacks: no heatmap")


if __name__ == "__main__":
    main()
