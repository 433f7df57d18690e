"""BLEU of one checkpoint on every direction, supervised and zero-shot, via fairseq-generate.

    python -m fairseq_gradvac.evaluation.evaluate --checkpoint runs/x/checkpoint_best.pt \
        --directions en-fr,fr-en --zero-shot fr-cs,cs-fr --raw data/x/raw --out runs/x/bleu

The task options (data, language list, training pairs, language tokens) are read from the
checkpoint, so a direction is decoded exactly as it was trained. Hypotheses are scored by
sacrebleu (BLEU and chrF) against the raw reference text (``--raw``) or, without it,
fairseq's own detokenized targets; the sacrebleu signatures are kept. Each direction's
off-target rate (the share of hypotheses identified as another language than the target,
among the languages scored: fairseq_gradvac.evaluation.off_target) is reported beside them. Writes OUT.json,
OUT.md and the hypotheses, one file per direction (OUT.hyp/DIRECTION.txt, with the
reference file in OUT.json), for paired significance tests between runs; OUT.json is
written last, so its presence means the evaluation is complete.

    python -m fairseq_gradvac.evaluation.evaluate --checkpoint runs/x/checkpoint_best.pt --raw data/x/raw \
        --out runs/x/bleu --samples 3 --try en-fr --spm-model data/x/spm.model

also prints 3 test sentences per direction next to the model's translation and the
reference (OUT.samples.md), and the fairseq-interactive command that translates typed text
en-fr with this checkpoint (sentencepiece in and out), after running it once on a sentence.
"""
import argparse
import gzip
import json
import os
import re
import shlex
import subprocess
import sys

import sacrebleu
import torch

from ..tasks.files import atomic_write
from . import off_target

USER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package: --user-dir


def checkpoint_task_options(path):
    """The multilingual task options a checkpoint was trained with."""
    from ..tasks import checkpoints  # noqa: F401  (loads fairseq checkpoints under weights_only)
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    task = state["cfg"]["task"]
    get = (lambda k: getattr(task, k, None)) if not hasattr(task, "get") else task.get
    options = {k: get(k) for k in ("data", "lang_dict", "lang_pairs", "encoder_langtok",
                                   "decoder_langtok", "lang_tok_replacing_bos_eos")}
    if not isinstance(options["lang_pairs"], str):
        options["lang_pairs"] = ",".join(options["lang_pairs"])
    return options


def _langtok_options(options):
    cmd = []
    if options.get("encoder_langtok"):
        cmd += ["--encoder-langtok", options["encoder_langtok"]]
    if options.get("decoder_langtok"):
        cmd += ["--decoder-langtok"]
    if options.get("lang_tok_replacing_bos_eos"):
        cmd += ["--lang-tok-replacing-bos-eos"]
    return cmd


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
    cmd += _langtok_options(options)
    if post_process:
        cmd += ["--post-process", post_process]
    if not torch.cuda.is_available():
        cmd += ["--cpu"]
    return cmd


def reference_path(raw_dir, direction, subset):
    src, tgt = direction.split("-")
    for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
        path = os.path.join(raw_dir, f"{subset}.{pair}.{tgt}")
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no reference file {subset}.{src}-{tgt}.{tgt} (or {tgt}-{src}) in {raw_dir}")


def read_lines(path):
    """The lines of a text file (gzip-compressed if it ends in .gz), split on newlines only:
    a hypothesis may hold \r, \x0b, \x1c-\x1e, \x85 or \u2028, which other splitters cut at."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line[:-1] if line.endswith("\n") else line for line in f]


def _read_references(raw_dir, direction, subset):
    return read_lines(reference_path(raw_dir, direction, subset))


def parse_generate_output(text):
    """{id: hypothesis} and {id: reference} from fairseq-generate's D-/T- lines. Lines are split
    on newlines only (fairseq prints one per line; str.splitlines would also cut a hypothesis
    at \x0b, \x1c-\x1e, \x85, \u2028 ...), and an id printed twice is an error."""
    hyps, refs = {}, {}
    for line in text.split("\n"):
        m = re.match(r"^([DT])-(\d+)\t(.*)$", line)
        if m:
            kind, idx, rest = m.groups()
            if int(idx) in (hyps if kind == "D" else refs):
                raise RuntimeError(f"fairseq-generate printed {kind}-{idx} twice")
            if kind == "D":  # D-id \t score \t detokenized hypothesis
                hyps[int(idx)] = rest.split("\t", 1)[1] if "\t" in rest else ""
            else:
                refs[int(idx)] = rest
    return hyps, refs


def evaluate_direction(checkpoint, options, direction, raw_dir=None, beam=5, max_tokens=8000,
                       post_process=None, subset="test", max_len=(0.0, 200)):
    cmd = generate_command(checkpoint, options, direction, beam, max_tokens, post_process, subset,
                           max_len)
    proc = subprocess.run(cmd, capture_output=True)  # bytes: text mode would turn \r into \n
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq-generate failed for {direction}:\n"
                           f"{proc.stderr.decode('utf-8', 'replace')[-3000:]}")
    hyps, targets = parse_generate_output(proc.stdout.decode("utf-8"))
    refs = _read_references(raw_dir, direction, subset) if raw_dir else [targets[i] for i in sorted(targets)]
    if sorted(hyps) != list(range(len(refs))):
        raise RuntimeError(
            f"{direction}: fairseq-generate translated {len(hyps)} of {len(refs)} sentences"
        )
    hypotheses = [hyps[i] for i in range(len(refs))]
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    score = bleu.corpus_score(hypotheses, [refs])
    chrf_score = chrf.corpus_score(hypotheses, [refs])
    return {"bleu": round(score.score, 2), "signature": str(bleu.get_signature()),
            "chrf": round(chrf_score.score, 2), "chrf_signature": str(chrf.get_signature()),
            "sentences": len(refs),
            "reference": os.path.abspath(reference_path(raw_dir, direction, subset)) if raw_dir else None,
            "hypotheses": hypotheses, "references": refs}


def _read_sources(raw_dir, direction, subset):
    src, tgt = direction.split("-")
    return _read_references(raw_dir, f"{tgt}-{src}", subset)


def pick_samples(sources, n, min_words=5, max_words=14):
    """Indices of ``n`` test sentences a person can read at a glance: the first ones (file
    order, i.e. the held-out rows' seeded order) whose source has min_words..max_words words;
    the first n of any length if too few qualify."""
    fit = [i for i, s in enumerate(sources) if min_words <= len(s.split()) <= max_words]
    return (fit if len(fit) >= n else list(range(len(sources))))[:n]


def samples_text(direction, sources, hypotheses, references, indices):
    lines = [f"#### {direction}", ""]
    for i in indices:
        lines += [f"- source:      {sources[i]}", f"  model:       {hypotheses[i]}",
                  f"  reference:   {references[i]}"]
    return "\n".join(lines + [""])


def interactive_command(checkpoint, options, direction, spm_model=None, beam=1,
                        max_len=(0.0, 200), absolute=True):
    """The fairseq-interactive command that translates stdin in ``direction`` with the
    checkpoint, as it was trained: data (dictionaries), language list, training pairs,
    language tokens, and the sentencepiece model that encodes the input and decodes the
    output; decoding as fairseq-generate's with the same beam and length cap."""
    src, tgt = direction.split("-")
    path = os.path.abspath if absolute else (lambda p: p)
    cmd = ["fairseq-interactive", path(options["data"]), "--user-dir", USER_DIR,
           "--task", "multilingual_gradvac", "--path", path(checkpoint),
           "--lang-dict", path(options["lang_dict"]), "--lang-pairs", options["lang_pairs"],
           "--source-lang", src, "--target-lang", tgt, "--beam", str(beam)]
    if tuple(max_len) != (0.0, 200):
        cmd += ["--max-len-a", f"{max_len[0]:g}", "--max-len-b", str(max_len[1])]
    cmd += _langtok_options(options)
    if spm_model:
        cmd += ["--bpe", "sentencepiece", "--sentencepiece-model", path(spm_model)]
    if not torch.cuda.is_available():
        cmd += ["--cpu"]
    return cmd


def run_interactive(cmd, lines):
    """Translations of ``lines`` by the fairseq-interactive command ``cmd`` (its D- lines,
    detokenized)."""
    exe = [sys.executable, "-m", "fairseq_cli.interactive"] + cmd[1:]
    proc = subprocess.run(exe, input="".join(l + "\n" for l in lines), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq-interactive failed:\n{proc.stderr[-3000:]}")
    hyps, _ = parse_generate_output(proc.stdout)
    if sorted(hyps) != list(range(len(lines))):
        raise RuntimeError(f"fairseq-interactive translated {len(hyps)} of {len(lines)} lines:\n"
                           f"{proc.stdout[-2000:]}")
    return [hyps[i] for i in range(len(lines))]


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
    lines = [f"### {title}", "", "| direction | kind | BLEU | chrF | off-target | sentences |",
             "|---|---|---:|---:|---:|---:|"]
    for d, r in results.items():
        rate = r.get("off_target")
        lines.append(f"| {d} | {'zero-shot' if d in zero_shot else 'supervised'} | {r['bleu']:.2f} "
                     f"| {r['chrf']:.2f} | {'-' if rate is None else f'{100 * rate:.1f}%'} | {r['sentences']} |")
    for name, value in summarize(results, zero_shot).items():
        if value is not None:
            lines.append(f"| avg {name.replace('_', '->' if name != 'zero_shot' else '-')} | | {value:.2f} | | | |")
    first = next(iter(results.values()), {})
    lines += ["", f"sacreBLEU signatures: BLEU `{first.get('signature', '')}`, chrF "
              f"`{first.get('chrf_signature', '')}`", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--directions", default=None,
                        help="supervised directions to score (default: the checkpoint's training pairs)")
    parser.add_argument("--zero-shot", default="", help="comma-separated zero-shot directions")
    parser.add_argument("--raw", default=None, help="folder of raw reference text: {subset}.{a}-{b}.{lang}")
    parser.add_argument("--data", default=None,
                        help="the binarized data folder (default: the one the checkpoint was trained on; "
                             "give it for a checkpoint copied from another machine)")
    parser.add_argument("--lang-dict", default=None, help="the language list (default: the checkpoint's)")
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
    parser.add_argument("--out", default=None,
                        help="output prefix: writes OUT.json and OUT.md (required unless only "
                             "--try is asked for)")
    parser.add_argument("--samples", type=int, default=0,
                        help="print this many test sentences per direction (--sample-directions) "
                             "next to the model's translation and the reference (needs --raw); "
                             "also written to OUT.samples.md")
    parser.add_argument("--sample-directions", default=None,
                        help="directions to show samples of (default: every scored direction)")
    parser.add_argument("--try", dest="try_direction", default=None, metavar="SRC-TGT",
                        help="print the fairseq-interactive command that translates SRC-TGT with "
                             "this checkpoint, and run it on --try-input to show it works")
    parser.add_argument("--try-input", default=None,
                        help="the sentence(s) to run the --try command on, '|'-separated "
                             "(default: the first sample's source)")
    parser.add_argument("--spm-model", default=None,
                        help="sentencepiece model for the --try command (encodes the input, "
                             "decodes the output)")
    args = parser.parse_args(argv)
    if args.samples and not args.raw:
        parser.error("--samples needs --raw (the source sentences)")
    if not args.out and not args.try_direction:
        parser.error("--out is required (or --try alone)")

    options = checkpoint_task_options(args.checkpoint)
    for key in ("data", "lang_dict"):
        options[key] = getattr(args, key) or options[key]
        if options[key] and not os.path.exists(options[key].split(os.pathsep)[0]):
            parser.error(f"--{key.replace('_', '-')} {options[key]} does not exist here (a checkpoint names "
                         f"the folders of the machine it was trained on: give --{key.replace('_', '-')})")
    directions = (args.directions or options["lang_pairs"]).split(",")
    zero_shot = [d for d in args.zero_shot.split(",") if d]
    results, samples = {}, []
    # the languages a hypothesis is identified among: every source and target scored
    languages = sorted({lang for d in directions + zero_shot for lang in d.split("-")})
    identifiable = off_target.known(languages)
    if not identifiable:
        print(f"[evaluate] no off-target rates: langid does not know all of {languages}", flush=True)
    sample_directions = (args.sample_directions.split(",") if args.sample_directions
                         else directions + zero_shot)
    for d in (directions + zero_shot) if args.out else []:
        results[d] = evaluate_direction(args.checkpoint, options, d, args.raw, args.beam,
                                        args.max_tokens, args.post_process, args.subset,
                                        (args.max_len_a, args.max_len_b))
        hypotheses, references = results[d].pop("hypotheses"), results[d].pop("references")
        if identifiable:
            results[d].update(off_target.off_target(hypotheses, d.split("-")[1], languages))
        if args.out:
            results[d]["hypotheses"] = write_hypotheses(args.out, d, hypotheses)
        print(f"[evaluate] {d}: BLEU {results[d]['bleu']:.2f} ({results[d]['sentences']} sentences)",
              flush=True)
        if args.samples and d in sample_directions:
            sources = _read_sources(args.raw, d, args.subset)
            samples.append(samples_text(d, sources, hypotheses, references,
                                        pick_samples(sources, args.samples)))
    if args.out:
        write_results(args, results, zero_shot, samples)
    if args.try_direction:
        try_interactive(args, options, parser)


def write_hypotheses(out, direction, hypotheses):
    """OUT.hyp/DIRECTION.txt, one hypothesis per test sentence; returns its path relative to
    OUT's folder (as OUT.json names it)."""
    folder = out + ".hyp"
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{direction}.txt")
    with atomic_write(path, encoding="utf-8") as f:
        f.write("".join(h + "\n" for h in hypotheses))
    return os.path.relpath(path, os.path.dirname(os.path.abspath(out)))


def write_results(args, results, zero_shot, samples):
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    payload = {"checkpoint": args.checkpoint, "zero_shot": zero_shot, "directions": results,
               "averages": summarize(results, zero_shot)}
    with open(args.out + ".json.tmp", "w") as f:  # last, and whole: its presence means done
        json.dump(payload, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(to_markdown(results, zero_shot, os.path.basename(os.path.dirname(os.path.abspath(args.checkpoint)))))
    print(to_markdown(results, zero_shot, args.checkpoint))
    if samples:
        text = "### Sample translations (test set)\n\n" + "\n".join(samples)
        with open(args.out + ".samples.md", "w") as f:
            f.write(text)
        print(text)
    os.replace(args.out + ".json.tmp", args.out + ".json")


def try_interactive(args, options, parser):
    """Print the fairseq-interactive command for --try and run it on a sentence."""
    cmd = interactive_command(args.checkpoint, options, args.try_direction, args.spm_model,
                              args.beam, (args.max_len_a, args.max_len_b))
    if args.try_input:
        lines = args.try_input.split("|")
    elif args.raw:
        sources = _read_sources(args.raw, args.try_direction, args.subset)
        lines = [sources[pick_samples(sources, 1)[0]]]
    else:
        parser.error("--try needs --try-input or --raw")
    translations = run_interactive(cmd, lines)
    print(f"### Try it: {args.try_direction} with fairseq-interactive (one sentence per line on "
          "stdin; Ctrl-D ends)\n\n    " + shlex.join(cmd) + "\n")
    print("For example (the translation is the D- line: id, score, text):\n\n    "
          f"echo {shlex.quote(lines[0])} | {shlex.join(cmd)} 2>/dev/null | grep ^D- | cut -f3\n")
    for line, translation in zip(lines, translations):
        print(f"    {line}\n -> {translation}")
    print(flush=True)


if __name__ == "__main__":
    main()
