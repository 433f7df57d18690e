"""BLEU and chrF of one direction of a checkpoint (Figure 2b's quality axis), from one
fairseq-generate pass (fairseq_gradvac.evaluation.evaluate) scored twice by sacrebleu.

    python -m fairseq_gradvac.evaluation.score --checkpoint RUN/checkpoint_best.pt \
        --direction en-fr --raw data/x/raw --post-process sentencepiece --out RUN/scores.json
"""
import argparse
import json
import os

import sacrebleu

from ..tasks.files import atomic_write
from . import evaluate


def score(checkpoint, direction, raw=None, post_process=None, beam=5, max_tokens=8000):
    """{"direction", "bleu", "chrf", "sentences", "bleu_signature", "chrf_signature"}."""
    options = evaluate.checkpoint_task_options(checkpoint)
    result = evaluate.evaluate_direction(checkpoint, options, direction, raw, beam, max_tokens, post_process)
    chrf = sacrebleu.metrics.CHRF()
    value = chrf.corpus_score(result["hypotheses"], [result["references"]])
    return {"checkpoint": checkpoint, "direction": direction, "bleu": result["bleu"],
            "chrf": round(value.score, 2), "sentences": result["sentences"],
            "bleu_signature": result["signature"], "chrf_signature": str(chrf.get_signature())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--direction", required=True, help="SRC-TGT, one of the checkpoint's training pairs")
    p.add_argument("--raw", default=None, help="folder of raw reference text: {subset}.{a}-{b}.{lang}")
    p.add_argument("--post-process", default=None, help="e.g. sentencepiece")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=8000)
    p.add_argument("--out", required=True, help="the JSON file to write")
    a = p.parse_args(argv)
    result = score(a.checkpoint, a.direction, a.raw, a.post_process or None, a.beam, a.max_tokens)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with atomic_write(a.out) as f:
        json.dump(result, f, indent=2)
    print(f"[score] {a.direction}: BLEU {result['bleu']:.2f}, chrF {result['chrf']:.2f} "
          f"({result['sentences']} sentences) -> {a.out}")


if __name__ == "__main__":
    main()
