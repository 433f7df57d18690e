"""``python -m fairseq_gradvac --help``: every option of the ``multilingual_gradvac`` task,
fairseq's multilingual ones and the plugin's own, with its help and default.

fairseq 0.12's ``fairseq-train --task multilingual_gradvac --help`` prints its help before
the task adds its options, so it lists none of them (the stock tasks' alike); this prints
them from the task's own ``add_args``, the code fairseq-train runs."""
import argparse


def build_parser() -> argparse.ArgumentParser:
    from .tasks.multilingual_gradvac import MultilingualGradVacTask

    parser = argparse.ArgumentParser(
        prog="python -m fairseq_gradvac",
        description="The options of fairseq-train --user-dir fairseq_gradvac --task multilingual_gradvac "
                    "(next to fairseq's own: fairseq-train --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    MultilingualGradVacTask.add_args(parser)
    return parser


def main(argv=None) -> None:
    build_parser().parse_args(["--help"] if not argv else argv)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
