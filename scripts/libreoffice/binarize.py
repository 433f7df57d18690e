"""Step 6: one fairseq dictionary and every pair binarized with fairseq-preprocess, verified."""
import collections


def build_dictionary(sp, tok_dir, pairs, dict_path):
    """fairseq dictionary = every sentencepiece piece (no <unk>/<s>/</s>), ordered by
    frequency in the encoded training text."""
    counts = collections.Counter()
    for (a, b), splits in pairs.items():
        if "train" in splits:
            for l in (a, b):
                with open(tok_dir / ("train.%s-%s.%s" % (a, b, l)), encoding="utf-8") as f:
                    for line in f:
                        counts.update(line.split())
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i))]
    rank = {p: i for i, p in enumerate(pieces)}
    pieces.sort(key=lambda p: (-counts[p], rank[p]))
    with open(dict_path, "w", encoding="utf-8") as f:
        for p in pieces:
            assert " " not in p
            f.write("%s %d\n" % (p, counts[p]))
    return len(pieces)


def binarize(bin_dir, tok_dir, pairs, dict_path, workers):
    """fairseq-preprocess (in this process: one fairseq import) for every pair, always
    with the one shared dictionary."""
    from fairseq import options
    from fairseq_cli import preprocess

    parser = options.get_preprocessing_parser()
    for (a, b), splits in pairs.items():
        argv = ["--source-lang", a, "--target-lang", b, "--srcdict", str(dict_path),
                "--tgtdict", str(dict_path), "--destdir", str(bin_dir),
                "--workers", str(max(1, workers))]
        for s in splits:
            argv += ["--%spref" % s, str(tok_dir / ("%s.%s-%s" % (s, a, b)))]
        args = parser.parse_args(argv)
        before = list(preprocess.logger.handlers)
        try:
            preprocess.main(args)
        finally:
            for h in preprocess.logger.handlers:
                if h not in before:
                    preprocess.logger.removeHandler(h)
                    h.close()


def verify_bin(bin_dir, pairs, langs, expected):
    """Every binarized file loads with fairseq and has as many rows as its raw file."""
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(str(bin_dir / ("dict.%s.txt" % langs[0])))
    for (a, b), splits in pairs.items():
        for s in splits:
            for l in (a, b):
                prefix = str(bin_dir / ("%s.%s-%s.%s" % (s, a, b, l)))
                ds = data_utils.load_indexed_dataset(prefix, d)
                if ds is None or len(ds) != expected[s]["%s-%s" % (a, b)]:
                    raise SystemExit("binarized %s: %s rows, expected %d" % (
                        prefix, None if ds is None else len(ds), expected[s]["%s-%s" % (a, b)]))
