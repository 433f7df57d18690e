"""BLEU of one checkpoint on every direction, supervised and zero-shot, via fairseq-generate.

    python -m fairseq_gradvac.evaluate --checkpoint runs/x/checkpoint_best.pt \
        --directions en-fr,fr-en --zero-shot fr-cs,cs-fr --raw data/x/raw --out runs/x/bleu

The task options (data, language list, training pairs, language tokens) are read from the
checkpoint, so a direction is decoded exactly as it was trained. Hypotheses are scored by
sacrebleu against the raw reference text (``--raw``) or, without it, fairseq's own
detokenized targets; the sacrebleu signature is kept. Writes OUT.json and OUT.md.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import sacrebleu
import torch

USER_DIR = os.path.dirname(os.path.abspath(__file__))


def checkpoint_task_options(path):
    """The multilingual task options a checkpoint was trained with."""
    from . import checkpoints  # noqa: F401  (loads fairseq checkpoints under weights_only)
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    task = state["cfg"]["task"]
    get = (lambda k: getattr(task, k, None)) if not hasattr(task, "get") else task.get
    options = {k: get(k) for k in ("data", "lang_dict", "lang_pairs", "encoder_langtok",
                                   "decoder_langtok", "lang_tok_replacing_bos_eos")}
    if not isinstance(options["lang_pairs"], str):
        options["lang_pairs"] = ",".join(options["lang_pairs"])
    return options


def generate_command(checkpoint, options, direction, beam, max_tokens, post_process, subset="test",
                     max_len=(0.0, 200)):
    src, tgt = direction.split("-")
    cmd = [
        sys.executable, "-m", "fairseq_cli.generate", options["data"],
        "--user-dir", USER_DIR, "--task", "multilingual_gradvac", "--path", checkpoint,
        "--lang-dict", options["lang_dict"], "--lang-pairs", options["lang_pairs"],
        "--source-lang", src, "--target-lang", tgt, "--gen-subset", subset,
        "--beam", str(beam), "--max-tokens", str(max_tokens),
        # fairseq drops the last partial batch when batches must be multiples of 8.
        "--required-batch-size-multiple", "1", "--scoring", "sacrebleu",
        # Hypotheses of at most a * source length + b tokens (fairseq's default: 200).
        "--max-len-a", str(max_len[0]), "--max-len-b", str(max_len[1]),
    ]
    if options.get("encoder_langtok"):
        cmd += ["--encoder-langtok", options["encoder_langtok"]]
    if options.get("decoder_langtok"):
        cmd += ["--decoder-langtok"]
    if options.get("lang_tok_replacing_bos_eos"):
        cmd += ["--lang-tok-replacing-bos-eos"]
    if post_process:
        cmd += ["--post-process", post_process]
    if not torch.cuda.is_available():
        cmd += ["--cpu"]
    return cmd


def _read_references(raw_dir, direction, subset):
    src, tgt = direction.split("-")
    for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
        path = os.path.join(raw_dir, f"{subset}.{pair}.{tgt}")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return [line.rstrip("\n") for line in f]
    raise FileNotFoundError(f"no reference file {subset}.{src}-{tgt}.{tgt} (or {tgt}-{src}) in {raw_dir}")


def parse_generate_output(text):
    """{id: hypothesis} and {id: reference} from fairseq-generate's D-/T- lines."""
    hyps, refs = {}, {}
    for line in text.splitlines():
        m = re.match(r"^([DT])-(\d+)\t(.*)$", line)
        if m:
            kind, idx, rest = m.groups()
            if kind == "D":  # D-id \t score \t detokenized hypothesis
                hyps[int(idx)] = rest.split("\t", 1)[1] if "\t" in rest else ""
            else:
                refs[int(idx)] = rest
    return hyps, refs


def evaluate_direction(checkpoint, options, direction, raw_dir=None, beam=5, max_tokens=8000,
                       post_process=None, subset="test", max_len=(0.0, 200)):
    cmd = generate_command(checkpoint, options, direction, beam, max_tokens, post_process, subset,
                           max_len)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq-generate failed for {direction}:\n{proc.stderr[-3000:]}")
    hyps, targets = parse_generate_output(proc.stdout)
    refs = _read_references(raw_dir, direction, subset) if raw_dir else [targets[i] for i in sorted(targets)]
    if sorted(hyps) != list(range(len(refs))):
        raise RuntimeError(
            f"{direction}: fairseq-generate translated {len(hyps)} of {len(refs)} sentences"
        )
    hypotheses = [hyps[i] for i in range(len(refs))]
    bleu = sacrebleu.metrics.BLEU()
    score = bleu.corpus_score(hypotheses, [refs])
    return {"bleu": round(score.score, 2), "signature": str(bleu.get_signature()),
            "sentences": len(refs)}


def _average(values):
    return round(sum(values) / len(values), 2) if values else None


def summarize(results, zero_shot):
    """Averages the paper reports: En->Any, Any->En, and the zero-shot directions."""
    supervised = [d for d in results if d not in zero_shot]
    return {
        "en_any": _average([results[d]["bleu"] for d in supervised if d.startswith("en-")]),
        "any_en": _average([results[d]["bleu"] for d in supervised if d.endswith("-en")]),
        "zero_shot": _average([results[d]["bleu"] for d in zero_shot if d in results]),
    }


def to_markdown(results, zero_shot, title):
    lines = [f"### {title}", "", "| direction | kind | BLEU | sentences |", "|---|---|---:|---:|"]
    for d, r in results.items():
        lines.append(f"| {d} | {'zero-shot' if d in zero_shot else 'supervised'} | {r['bleu']:.2f} | {r['sentences']} |")
    for name, value in summarize(results, zero_shot).items():
        if value is not None:
            lines.append(f"| avg {name.replace('_', '->' if name != 'zero_shot' else '-')} | | {value:.2f} | |")
    signature = next(iter(results.values()))["signature"] if results else ""
    lines += ["", f"sacreBLEU signature: `{signature}`", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--directions", default=None,
                        help="supervised directions to score (default: the checkpoint's training pairs)")
    parser.add_argument("--zero-shot", default="", help="comma-separated zero-shot directions")
    parser.add_argument("--raw", default=None, help="folder of raw reference text: {subset}.{a}-{b}.{lang}")
    parser.add_argument("--post-process", default=None, help="e.g. sentencepiece")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=8000)
    parser.add_argument("--subset", default="test")
    parser.add_argument("--max-len-a", type=float, default=0.0,
                        help="cap hypotheses at a * source length + b tokens (fairseq's option). A "
                             "cap bounds the time an undertrained model takes, but can cut real "
                             "translations into languages with longer tokenizations (a=1.5, b=10 "
                             "lowered en-hi BLEU here)")
    parser.add_argument("--max-len-b", type=int, default=200)
    parser.add_argument("--out", required=True, help="output prefix: writes OUT.json and OUT.md")
    args = parser.parse_args(argv)

    options = checkpoint_task_options(args.checkpoint)
    directions = (args.directions or options["lang_pairs"]).split(",")
    zero_shot = [d for d in args.zero_shot.split(",") if d]
    results = {}
    for d in directions + zero_shot:
        results[d] = evaluate_direction(args.checkpoint, options, d, args.raw, args.beam,
                                        args.max_tokens, args.post_process, args.subset,
                                        (args.max_len_a, args.max_len_b))
        print(f"[evaluate] {d}: BLEU {results[d]['bleu']:.2f} ({results[d]['sentences']} sentences)",
              flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    payload = {"checkpoint": args.checkpoint, "zero_shot": zero_shot, "directions": results,
               "averages": summarize(results, zero_shot)}
    with open(args.out + ".json", "w") as f:
        json.dump(payload, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(to_markdown(results, zero_shot, os.path.basename(os.path.dirname(os.path.abspath(args.checkpoint)))))
    print(to_markdown(results, zero_shot, args.checkpoint))


if __name__ == "__main__":
    main()
