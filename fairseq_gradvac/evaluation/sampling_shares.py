"""Training rows and target tokens per direction, and each direction's share of the sampled
training sentences at temperatures T (fairseq's own temperature sampling: ratio
(n_i / N) ** (1 / T) over rows, normalized) and of the sampled target tokens (the sentence
share times the direction's mean target length, normalized): the data-imbalance facts a
study reports next to its scores. The token share is what a direction weighs in a batch's
loss; the sentence share is what the sampler draws.

    python -m fairseq_gradvac.evaluation.sampling_shares DATA_BIN --lang-pairs en-fr,fr-en,en-hi,hi-en \
        --temperatures 1,5 --out RUNS/data

Rows and tokens are counted in the binarized training files (``train.{a}-{b}.{src}`` and
``.{tgt}``, either order of the pair, as fairseq's multilingual task reads them; tokens
without the end-of-sentence token). Writes OUT.json and OUT.md.
"""
import argparse
import json
import os

from fairseq.data.indexed_dataset import data_file_path, make_dataset
from fairseq.data.multilingual.sampling_method import temperature_sampling


def _prefix(data_bin, direction, lang):
    src, tgt = direction.split("-")
    for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
        prefix = os.path.join(data_bin, f"train.{pair}.{lang}")
        if os.path.exists(data_file_path(prefix)):
            return prefix
    raise FileNotFoundError(f"no training data for {direction} in {data_bin} "
                            f"(train.{src}-{tgt}.{lang} or train.{tgt}-{src}.{lang})")


def training_rows(data_bin, directions):
    """{direction: rows} of the binarized training split."""
    return {d: len(make_dataset(_prefix(data_bin, d, d.split("-")[0]), impl="mmap")) for d in directions}


def training_tokens(data_bin, directions):
    """{direction: target tokens} of the binarized training split (end-of-sentence left out)."""
    tokens = {}
    for d in directions:
        dataset = make_dataset(_prefix(data_bin, d, d.split("-")[1]), impl="mmap")
        tokens[d] = int(dataset.sizes.sum()) - len(dataset)  # (sizes is a view of its mmap: keep it open)
    return tokens


def shares(rows, temperature):
    """{direction: share of the sampled training rows} at ``temperature``."""
    ratios = temperature_sampling(list(rows.values()), temperature)
    total = sum(ratios)
    return {d: r / total for d, r in zip(rows, ratios)}


def token_shares(rows, tokens, temperature):
    """{direction: share of the sampled target tokens} at ``temperature``."""
    weighted = {d: s * tokens[d] / rows[d] for d, s in shares(rows, temperature).items()}
    total = sum(weighted.values())
    return {d: w / total for d, w in weighted.items()}


def to_markdown(rows, tokens, table, token_table):
    temps = list(table)
    lines = ["| direction | training rows | target tokens | "
             + " | ".join(f"sentences at T={t:g}" for t in temps) + " | "
             + " | ".join(f"tokens at T={t:g}" for t in temps) + " |",
             "|---|---:|---:|" + "---:|" * (2 * len(temps))]
    for d, n in rows.items():
        lines.append(f"| {d} | {n:,} | {tokens[d]:,} | " + " | ".join(f"{100 * table[t][d]:.1f}%" for t in temps)
                     + " | " + " | ".join(f"{100 * token_table[t][d]:.1f}%" for t in temps) + " |")
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
    tokens = training_tokens(a.data_bin, list(rows))
    table = {t: shares(rows, t) for t in temps}
    token_table = {t: token_shares(rows, tokens, t) for t in temps}
    text = to_markdown(rows, tokens, table, token_table)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out + ".md", "w") as f:
            f.write(text)
        with open(a.out + ".json", "w") as f:
            json.dump({"rows": rows, "target_tokens": tokens, "shares": {f"{t:g}": s for t, s in table.items()},
                       "token_shares": {f"{t:g}": s for t, s in token_table.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
