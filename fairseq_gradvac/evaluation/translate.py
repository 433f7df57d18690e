"""Translate text from stdin with a trained run's model, one sentence per line:

    echo "Choose Format - Cells." | python -m fairseq_gradvac.evaluation.translate RUN en fr
    bash scripts/translate.sh RUN en fr        # the same

The checkpoint (RUN/checkpoint_best.pt) says how it was trained (data, languages, language
tokens); the sentencepiece model is the corpus's (spm.model beside its bin/), unless given.
Greedy decoding, hypotheses capped at 1.5 x source + 10 tokens, as the demo scores them.
"""
import argparse
import os
import sys

from .evaluate import checkpoint_task_options, interactive_command, run_interactive


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a training run's folder (or a checkpoint file)")
    p.add_argument("source", help="source language, e.g. en")
    p.add_argument("target", help="target language, e.g. fr (a zero-shot pair works too)")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--spm-model", default=None, help="default: spm.model beside the corpus's bin/")
    a = p.parse_args(argv)
    checkpoint = a.run if os.path.isfile(a.run) else os.path.join(a.run, "checkpoint_best.pt")
    if not os.path.exists(checkpoint):
        raise SystemExit(f"no checkpoint: {checkpoint}")
    options = checkpoint_task_options(checkpoint)
    spm = a.spm_model
    if spm is None:
        beside = os.path.join(os.path.dirname(os.path.abspath(options["data"])), "spm.model")
        spm = beside if os.path.exists(beside) else None
    lines = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not lines:
        return
    cmd = interactive_command(checkpoint, options, f"{a.source}-{a.target}", spm, a.beam, (1.5, 10))
    for translation in run_interactive(cmd, lines):
        print(translation)


if __name__ == "__main__":
    main()
