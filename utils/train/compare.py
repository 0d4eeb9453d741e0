"""Comparison of finished runs: a table per dataset (methods x bits) and PR / P@K figures per bit length.

Each run folder gives its config.json (dataset, method, bits, seed, encoders) and metrics.json. A cell holds
mAP@20 I->T and T->I (the paper's tables) and the mean of the four directions; runs that differ only
in seed share a cell, shown as mean ± standard deviation (sample, n - 1) with the number of seeds.
The paper's numbers (configs/published.py) stand beside each cell the paper reports. Runs on features of
other encoders than the paper's are rows of their own (``duch @tag``); the float reference (``--method
float``: no bits) stands in every bit column, with the bytes an item takes beside the codes' bits / 8.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from configs.published import published
from configs.train import FLOAT_METHOD, METHODS, TrainConfig
from utils.errors import DUCHError
from utils.io import read_json, write_text

MAP_KEY = "map@20"
PR_DIRECTIONS = ("i2t", "t2i")


@dataclass
class RunResult:
    run_dir: Path
    dataset: str
    method: str
    bit: int | None  # None: the float reference, in every bit column
    seed: int
    i2t: float | None  # None: not defined (float embeddings of two spaces)
    t2i: float | None
    avg: float | None
    curves: dict = field(default_factory=dict)  # p@k, precision_radius, recall_radius by direction
    select: str = "map"  # the validation score that kept the model (--select; runs made before: map)
    i2i: float | None = None
    t2t: float | None = None
    encoders: str = ""  # "" for the paper's features, else "@<tag>" (TrainConfig.encoders_part)
    bytes_per_item: int | None = None  # float reference: image + caption float32 bytes

    @property
    def row(self) -> str:
        """The table row: the method, and the encoders when they are not the paper's."""
        return f"{self.method} {self.encoders}" if self.encoders else self.method


def dataset_label(config: dict) -> str:
    """The dataset as the tables name it: its CLI name, or for a dataset given by path its --name or the file's
    stem (never the path itself)."""
    from configs.datasets import is_dataset_file

    raw = str(config["dataset"])
    if not is_dataset_file(raw):
        return raw
    name = config.get("name")
    return str(name) if isinstance(name, str) and name else (Path(raw).stem or Path(raw).name)


def file_part(name: str) -> str:
    """A name as one part of an output file name: only letters, digits and ``_.+=,@-`` (others become ``_``),
    no leading dot, at most 100 characters; data in a config.json cannot lead a table out of its folder."""
    from utils.paths import sanitised_name

    return sanitised_name(name, 100, "dataset")


def load_result(run_dir: str | Path) -> RunResult:
    """The comparison figures of one finished run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise DUCHError(f"{run_dir} is not a run folder of main.py (no config.json)")
    if not (run_dir / "metrics.json").is_file():
        raise DUCHError(
            f"{run_dir} has no metrics.json: the run is not finished (train it to the end, or run main.py --test)"
        )
    config = read_json(run_dir / "config.json", "run configuration")
    metrics = read_json(run_dir / "metrics.json", "run metrics")
    method = str(config.get("method", "duch"))

    def value(x):
        return None if x is None and method == FLOAT_METHOD else float(x)

    try:
        table = metrics[MAP_KEY]
        i2t, t2i = value(table["i2t"]), value(table["t2i"])
        four = [value(table[d]) for d in ("i2t", "t2i", "i2i", "t2t")]
        avg = None if None in four else float(np.mean(four))
        result = RunResult(
            run_dir,
            dataset_label(config),
            method,
            None if method == FLOAT_METHOD else int(config["bit"]),
            int(config.get("seed", 0)),
            i2t,
            t2i,
            avg,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DUCHError(
            f"{run_dir}: metrics.json or config.json lacks {err} (a cross-modal run of main.py has it)"
        ) from None
    result.curves = {k: metrics[k] for k in ("p@k", "precision_radius", "recall_radius", "precision_rank",
                                              "recall_rank") if k in metrics}
    result.select = str(config.get("select") or "map")
    result.i2i, result.t2t = four[2], four[3]
    result.encoders = TrainConfig(encoder=str(config.get("encoder") or TrainConfig.encoder),
                                  text_encoder=str(config.get("text_encoder") or TrainConfig.text_encoder)
                                  ).encoders_part()
    if method == FLOAT_METHOD:
        result.bytes_per_item = int(sum(metrics.get("float", {}).get("bytes_per_item", {}).values()))
        result.select = "-"
    return result


def _method_order(rows) -> list[str]:
    """Table rows: by method (METHODS order, the float reference last), then the paper's features first."""
    def key(row: str):
        method, _, encoders = row.partition(" ")
        return (METHODS.index(method) if method in METHODS else len(METHODS), method, encoders)

    return sorted(rows, key=key)


@dataclass
class Cell:
    values: dict[str, list[float | None]]  # i2t, t2i, avg -> one value per seed (None: not defined)
    seeds: list[int]
    selects: set[str] = field(default_factory=set)  # the --select of its runs
    bytes_per_item: int | None = None  # the float reference's

    def defined(self, key: str) -> bool:
        return None not in self.values[key]

    def mean(self, key: str) -> float:
        return float(np.mean(self.values[key]))

    def std(self, key: str) -> float:
        v = self.values[key]
        return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

    @property
    def n(self) -> int:
        return len(self.seeds)


def cells(results: list[RunResult]) -> dict[str, dict[str, dict[int, Cell]]]:
    """dataset -> row (method and encoders) -> bit -> Cell; a float reference fills every bit of its dataset's
    table. Two runs of one cell with the same seed are refused (ambiguous)."""
    out: dict = {}
    bits_of: dict[str, set] = {}
    for r in results:
        bits_of.setdefault(r.dataset, set()).add(r.bit)
    for r in results:
        bits = [r.bit] if r.bit is not None else sorted(b for b in bits_of[r.dataset] if b is not None) or [0]
        for bit in bits:
            cell = (
                out.setdefault(r.dataset, {})
                .setdefault(r.row, {})
                .setdefault(bit, Cell({k: [] for k in CELL_KEYS}, [], bytes_per_item=r.bytes_per_item))
            )
            if r.seed in cell.seeds:
                raise DUCHError(
                    f"two runs of {r.dataset} {r.row} {bit} bits with seed {r.seed} (one is {r.run_dir}): "
                    f"pass one of them"
                )
            cell.seeds.append(r.seed)
            cell.selects.add(r.select)
            for key in CELL_KEYS:
                cell.values[key].append(getattr(r, key))
    return out


CELL_KEYS = ("i2t", "t2i", "avg", "i2i", "t2t")


def _fmt(cell: Cell, key: str) -> str:
    if not cell.defined(key):
        if key == "avg" and cell.defined("i2i") and cell.defined("t2t"):  # float embeddings of two spaces
            return f"n/a (I->I {_fmt(cell, 'i2i')}, T->T {_fmt(cell, 't2t')})"
        return "n/a"
    return f"{cell.mean(key):.3f}" if cell.n == 1 else f"{cell.mean(key):.3f} ± {cell.std(key):.3f}"


def markdown_table(dataset: str, by_method: dict[str, dict[int, Cell]]) -> str:
    """Rows: methods; per bit length a column I->T / T->I (the paper's [in brackets]) and the 4-direction mean."""
    bits = sorted({b for per_bit in by_method.values() for b in per_bit})
    multi = any(c.n > 1 for per_bit in by_method.values() for c in per_bit.values())
    selects = sorted({x for per_bit in by_method.values() for c in per_bit.values() for x in c.selects} - {"-"})
    mixed = len(selects) > 1
    head = ["method"] + [h for b in bits for h in (f"{b} bits I->T / T->I", f"{b} bits avg")]
    lines = [
        f"mAP@20 on {dataset} (I->T / T->I; avg: mean of I->T, T->I, I->I, T->T; [paper]; a B-bit code takes B/8 "
        f"bytes per item: {', '.join(f'{b} bits {b / 8:g} B' for b in bits)})"
        + ("; mean ± std over seeds (n)" if multi else "")
        + (f"; models selected on validation {SELECT_NAMES.get(selects[0], selects[0])}" if not mixed else
           "; models selected on validation mAP@20 or mR, as each cell says"),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    floats = [row for row in by_method if row.partition(" ")[0] == FLOAT_METHOD]
    for method in _method_order(by_method):
        per_bit = by_method[method]
        size = next((c.bytes_per_item for c in per_bit.values() if c.bytes_per_item), None)
        row = [method + (f" (float32, {size} B/item)" if size else "")]
        for b in bits:
            cell = per_bit.get(b)
            paper = "" if method in floats else published(dataset, method, b)
            mark = f" [{paper[0]:.3f} / {paper[1]:.3f}]" if paper else ""
            if cell is None:
                row += [f"-{mark}", "-"]
                continue
            n = f" (n={cell.n})" if multi else ""
            sel = f" (selected on {'/'.join(sorted(cell.selects))})" if mixed and method not in floats else ""
            row += [f"{_fmt(cell, 'i2t')} / {_fmt(cell, 't2i')}{mark}{n}{sel}", _fmt(cell, "avg")]
        lines.append("| " + " | ".join(row) + " |")
    if floats:
        lines += ["", "float: the encoders' own embeddings ranked by cosine similarity, the reference the codes "
                      "replace (the same in every column; n/a: image and caption embeddings from two encoders share "
                      "no space)"]
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "dataset",
    "method",
    "bit",
    "n",
    "seeds",
    "i2t_mean",
    "i2t_std",
    "t2i_mean",
    "t2i_std",
    "avg_mean",
    "avg_std",
    "paper_i2t",
    "paper_t2i",
    "select",
    "bytes_per_item",
)
SELECT_NAMES = {"map": "mAP@20", "mr": "mR"}


def csv_table(dataset: str, by_method: dict[str, dict[int, Cell]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for method in _method_order(by_method):
        for b in sorted(by_method[method]):
            c = by_method[method][b]
            paper = published(dataset, method, b) or ("", "")
            writer.writerow(
                [
                    dataset,
                    method,
                    b,
                    c.n,
                    " ".join(map(str, c.seeds)),
                    *(f"{f(k):.6f}" if c.defined(k) else "" for k in ("i2t", "t2i", "avg") for f in (c.mean, c.std)),
                    *paper,
                    "/".join(sorted(c.selects)),
                    c.bytes_per_item if c.bytes_per_item else f"{b / 8:g}",
                ]
            )
    return buf.getvalue()


def plot_bit(results: list[RunResult], path: str | Path, title: str) -> list[str]:
    """PR curves (top) and P@K curves (bottom) of I->T and T->I, one line per method (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.io import atomic_path

    fig, axes = plt.subplots(2, 2, figsize=(11, 9), constrained_layout=True)
    by_method: dict[str, list[RunResult]] = {}
    for r in results:
        by_method.setdefault(r.row, []).append(r)
    labels = []
    for method in _method_order(by_method):
        runs = [r for r in by_method[method] if r.curves and all(d in r.curves["p@k"] for d in PR_DIRECTIONS)]
        if not runs:
            continue
        label = method + (f" (n={len(runs)})" if len(runs) > 1 else "")
        labels.append(label)
        radius = "precision_radius" in runs[0].curves  # hash codes: radii; the float reference: rank cut-offs
        for col, d in enumerate(PR_DIRECTIONS):
            p = np.mean([r.curves["precision_radius" if radius else "precision_rank"][d] for r in runs], axis=0)
            rc = np.mean([r.curves["recall_radius" if radius else "recall_rank"][d] for r in runs], axis=0)
            axes[0, col].plot(rc, p, marker="." if radius else "x", linestyle="-" if radius else "--", label=label)
            ks = sorted(runs[0].curves["p@k"][d], key=int)
            pk = np.mean([[r.curves["p@k"][d][k] for k in ks] for r in runs], axis=0)
            axes[1, col].plot([int(k) for k in ks], pk, marker=".", label=label)
    names = {"i2t": "I->T", "t2i": "T->I"}
    for col, d in enumerate(PR_DIRECTIONS):
        axes[0, col].set(title=f"PR over Hamming radii (float: over ranks), {names[d]}", xlabel="recall",
                         ylabel="precision")
        axes[1, col].set(title=f"P@K, {names[d]}", xlabel="K", ylabel="precision")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            if labels:
                ax.legend(fontsize="small")
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return labels


def write_comparison(results: list[RunResult], out_dir: str | Path, stem: str = "compare") -> dict[str, list[str]]:
    """``<stem>_<dataset>.md`` / ``.csv`` per dataset, ``<stem>_<dataset>_<bit>.png`` per bit length; returns paths."""
    out_dir = Path(out_dir)
    written: dict[str, list[str]] = {"tables": [], "figures": []}
    for dataset, by_method in cells(results).items():
        part = file_part(dataset)
        md = out_dir / f"{stem}_{part}.md"
        write_text(md, markdown_table(dataset, by_method))
        write_text(out_dir / f"{stem}_{part}.csv", csv_table(dataset, by_method))
        written["tables"] += [str(md), str(out_dir / f"{stem}_{part}.csv")]
        for bit in sorted({r.bit for r in results if r.dataset == dataset and r.bit is not None}):
            path = out_dir / f"{stem}_{part}_{bit}.png"
            plot_bit([r for r in results if r.dataset == dataset and r.bit in (bit, None)], path,
                     f"{dataset}, {bit} bits")
            written["figures"].append(str(path))
    return written


def compare_runs(run_dirs, out_dir: str | Path) -> dict[str, list[str]]:
    """evaluate.py --compare: the comparison of finished run folders written to ``out_dir``; the Markdown
    tables and the list of written files are logged."""
    from utils.logs import setup_logger

    logger = setup_logger()
    results = [load_result(run_dir) for run_dir in run_dirs]
    written = write_comparison(results, Path(out_dir))
    for table in written["tables"]:
        if table.endswith(".md"):
            logger.info(Path(table).read_text(encoding="utf-8"))
    logger.info("comparison: " + ", ".join(written["tables"] + written["figures"]))
    return written
