"""study_bundle's training rate: only the invocations fairseq timed count, with the updates
they made (a run killed and resumed, and a bilingual row's per-direction models)."""
from fairseq_gradvac.evaluation import study_bundle

KILLED = "\n".join([  # the first invocation, killed at update 300: no "done training in"
    "a | INFO | fairseq_cli.train | {'_name': None}",
    "a | INFO | train_inner | epoch 001:  300 / 900 loss=7.1, num_updates=300, lr=0.001",
])
RESUMED = "\n".join([
    "b | INFO | fairseq_cli.train | {'_name': None}",
    "b | INFO | fairseq.trainer | Loaded checkpoint /x/checkpoint_last.pt (epoch 1 @ 200 updates)",
    "b | INFO | train_inner | epoch 002:  100 / 900 loss=6.1, num_updates=1000, lr=0.001",
    "b | INFO | fairseq_cli.train | done training in 400.0 seconds",
])


def test_the_rate_counts_the_timed_invocations_updates_only(tmp_path):
    (tmp_path / "train.log").write_text(KILLED + "\n" + RESUMED + "\n")
    # 800 updates (200 -> 1000) in 400 s, not the budget's 1000 over them
    assert study_bundle.updates_per_second(str(tmp_path)) == 2.0


def test_a_bilingual_rows_models_add_up(tmp_path):
    for unit, text in (("en-fr", RESUMED), ("fr-en", RESUMED.replace("400.0", "200.0"))):
        (tmp_path / unit).mkdir()
        (tmp_path / unit / "train.log").write_text(text + "\n")
    assert study_bundle.updates_per_second(str(tmp_path)) == round(1600 / 600, 3)
    assert study_bundle.updates_per_second(str(tmp_path / "missing")) is None  # no log: no rate
