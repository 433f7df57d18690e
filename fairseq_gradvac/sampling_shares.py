"""Training rows per direction and the share of training batches each direction gets at
temperatures T (fairseq's own temperature sampling: ratio (n_i / N) ** (1 / T), normalized),
the data-imbalance facts a study reports next to its scores.

    python -m fairseq_gradvac.sampling_shares DATA_BIN --lang-pairs en-fr,fr-en,en-hi,hi-en \
        --temperatures 1,5 --out RUNS/data

Rows are counted in the binarized training files (``train.{a}-{b}.{src}``, either order of
the pair, as fairseq's multilingual task reads them). Writes OUT.json and OUT.md.
"""
import argparse
import json
import os

from fairseq.data.indexed_dataset import data_file_path, make_dataset
from fairseq.data.multilingual.sampling_method import temperature_sampling


def training_rows(data_bin, directions):
    """{direction: rows} of the binarized training split."""
    rows = {}
    for direction in directions:
        src, tgt = direction.split("-")
        for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
            prefix = os.path.join(data_bin, f"train.{pair}.{src}")
            if os.path.exists(data_file_path(prefix)):
                rows[direction] = len(make_dataset(prefix, impl="mmap"))
                break
        else:
            raise FileNotFoundError(f"no training data for {direction} in {data_bin} "
                                    f"(train.{src}-{tgt}.{src} or train.{tgt}-{src}.{src})")
    return rows


def shares(rows, temperature):
    """{direction: share of the sampled training rows} at ``temperature``."""
    ratios = temperature_sampling(list(rows.values()), temperature)
    total = sum(ratios)
    return {d: r / total for d, r in zip(rows, ratios)}


def to_markdown(rows, table):
    temps = list(table)
    lines = ["| direction | training rows | " + " | ".join(f"share at T={t:g}" for t in temps) + " |",
             "|---|---:|" + "---:|" * len(temps)]
    for d, n in rows.items():
        lines.append(f"| {d} | {n:,} | " + " | ".join(f"{100 * table[t][d]:.1f}%" for t in temps) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_bin")
    p.add_argument("--lang-pairs", required=True)
    p.add_argument("--temperatures", default="1,5")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    a = p.parse_args(argv)
    rows = training_rows(a.data_bin, [d for d in a.lang_pairs.split(",") if d])
    temps = [float(t) for t in a.temperatures.split(",") if t]
    if any(not t > 0 for t in temps):
        raise SystemExit(f"temperatures must be positive: {a.temperatures}")
    table = {t: shares(rows, t) for t in temps}
    text = to_markdown(rows, table)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out + ".md", "w") as f:
            f.write(text)
        with open(a.out + ".json", "w") as f:
            json.dump({"rows": rows, "shares": {f"{t:g}": s for t, s in table.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
