"""Plots of a training run from its fairseq log: the gradient-similarity matrix between
directions (as in the paper's Figure 1) and per-direction losses over updates.

    python -m fairseq_gradvac.plot RUN/train.log --out RUN/plots

Reads the ``train_inner`` lines fairseq writes with ``--log-format simple`` (the task logs
``cos_A_B``, ``corrected`` and ``loss_XX-YY`` there). Writes OUT_similarity.png and
OUT_losses.png.
"""
import argparse
import re

_FIELD = re.compile(r"(\S+?)=(-?[0-9.]+(?:e-?\d+)?)")


def read_log(path):
    """One dict of the logged numbers per train_inner line, in order."""
    records = []
    with open(path, errors="replace") as f:
        for line in f:
            if "| train_inner |" in line:
                records.append({k: float(v) for k, v in _FIELD.findall(line.split("| train_inner |", 1)[1])})
    if not records:
        raise SystemExit(f"no train_inner lines in {path} (train with --log-format simple)")
    return records


def similarity_matrix(records, last=10):
    """Directions and the mean of cos_A_B over the last ``last`` log lines (NaN on the diagonal)."""
    pairs = {}
    for rec in records[-last:]:
        for key, value in rec.items():
            if key.startswith("cos_"):
                a, b = key[4:].split("_", 1)
                pairs.setdefault((a, b), []).append(value)
    directions = sorted({d for pair in pairs for d in pair})
    matrix = [[float("nan")] * len(directions) for _ in directions]
    for (a, b), values in pairs.items():
        matrix[directions.index(a)][directions.index(b)] = sum(values) / len(values)
    return directions, matrix


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log")
    p.add_argument("--out", required=True, help="output prefix")
    p.add_argument("--last", type=int, default=10, help="log lines averaged in the matrix")
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(a.log)
    written = []
    directions, matrix = similarity_matrix(records, a.last)
    if directions:
        fig, ax = plt.subplots(figsize=(max(4.5, 1.5 + 0.7 * len(directions)), 1.2 + 0.6 * len(directions)))
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(len(directions)), directions, rotation=45, ha="right")
        ax.set_yticks(range(len(directions)), directions)
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                if v == v:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(f"gradient cosine (row vs column)\nbefore correction, last {min(a.last, len(records))} logs", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
        fig.tight_layout()
        fig.savefig(a.out + "_similarity.png", dpi=120)
        written.append(a.out + "_similarity.png")
    updates = [r.get("num_updates", i) for i, r in enumerate(records)]
    losses = sorted({k for r in records for k in r if k.startswith("loss_")})
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in losses:
        ax.plot(updates, [r.get(key, float("nan")) for r in records], label=key[5:])
    ax.set_xlabel("update")
    ax.set_ylabel("training loss (base 2)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(a.out + "_losses.png", dpi=120)
    written.append(a.out + "_losses.png")
    print("\n".join(written))


if __name__ == "__main__":
    main()
