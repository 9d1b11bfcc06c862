"""The audit's analysis: change derivation, ablation variants, intervals, needed/sufficient, verdict."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from conftest import CONF_DIR
from reprolab.audit.checks import seed_checks
from reprolab.audit.design import (
    CODE,
    Change,
    ablation_variants,
    apply_changes,
    coalitions,
    code_change,
    derive_changes,
    grouping_warnings,
)
from reprolab.audit.measure import Bootstrap, Labels
from reprolab.audit.verdict import summarize
from reprolab.config import TargetMetric, load_config
from reprolab.metrics import describe_target
from reprolab.results import RunResult


@pytest.fixture(scope="module")
def presets():
    config = load_config([], CONF_DIR)
    return config.experiments["baseline"], config.experiments["regularized"]


def test_baseline_to_regularized_is_exactly_the_four_changes(presets):
    changes = {change.name: change.values for change in derive_changes(*presets)}
    assert changes == {
        "hidden size": {"model.hidden_size": (128, 32)},
        "dropout": {"model.dropout": (0.0, 0.3), "model.output_dropout": (0.0, 0.3)},
        "learning rate": {"train.lr": (0.01, 0.001)},
        "early stopping": {"train.early_stopping.enabled": (False, True)},
    }


def test_grouping_keeps_related_keys_together(presets):
    before = copy.deepcopy(presets[0])
    after = copy.deepcopy(presets[0])
    after.train.early_stopping.enabled = True
    after.train.early_stopping.patience = 5
    after.train.weight_decay = 0.01
    after.description = "ignored"
    changes = {change.name: sorted(change.values) for change in derive_changes(before, after)}
    assert changes == {
        "early stopping": ["train.early_stopping.enabled", "train.early_stopping.patience"],
        "train.weight_decay": ["train.weight_decay"],
    }


def test_identical_presets_have_no_changes(presets):
    assert derive_changes(presets[0], presets[0]) == []


def test_variants_are_every_combination_of_the_changes(presets):
    before, after = presets
    variants = ablation_variants(before, after)
    assert len(variants) == 2**4
    added = variants["before + dropout"]
    assert (added.model.dropout, added.model.output_dropout, added.model.hidden_size) == (0.3, 0.3, 128)
    assert added.train == before.train
    removed = variants["after - early stopping"]
    assert not removed.train.early_stopping.enabled and removed.model == after.model
    pair = variants["before + hidden size + learning rate"]
    assert (pair.model.hidden_size, pair.model.dropout, pair.train.lr) == (32, 0.0, 0.001)
    assert variants["before"] == before
    assert (variants["after"].model, variants["after"].train) == (after.model, after.train)
    # Applying every change to before gives after.
    rebuilt = apply_changes(before, derive_changes(before, after), "after")
    assert (rebuilt.model, rebuilt.train) == (after.model, after.train)


def test_more_changes_than_the_exact_design_allows_are_grouped_by_section(presets):
    before, after = copy.deepcopy(presets[0]), copy.deepcopy(presets[0])
    for key, value in (("num_layers", 3), ("hidden_size", 7), ("dropout", 0.1), ("cell", "lstm")):
        setattr(after.model, key, value)
    for key, value in (("lr", 0.5), ("weight_decay", 0.1), ("batch_size", 3)):
        setattr(after.train, key, value)
    changes = derive_changes(before, after)
    assert [(c.name, sorted(c.merged)) for c in changes] == [
        ("model settings", ["dropout", "hidden size", "model.cell", "model.num_layers"]),
        ("training settings", ["learning rate", "train.batch_size", "train.weight_decay"]),
    ]
    assert sum(len(c.values) for c in changes) == 7
    variants = ablation_variants(before, after)
    assert len(variants) == 4 and variants["after"] == apply_changes(before, changes, "after")
    assert variants["after"].model == after.model and variants["after"].train == after.train
    (warning,) = grouping_warnings(changes)
    assert warning.startswith("7 changes are more than the 6") and "model settings (" in warning
    # Six changes stay one by one.
    after.train = copy.deepcopy(before.train)
    after.train.lr = 0.5
    assert [c.merged for c in derive_changes(before, after)] == [[]] * 5
    # With less room (the training code takes a place of its own), they are grouped.
    assert [c.name for c in derive_changes(before, after, room=4)] == ["model settings", "training settings"]


def test_the_training_code_is_a_change_no_preset_key_holds(presets):
    """Between runs of different code the code is one more change: a player of every coalition,
    labelled like the others, that leaves the preset as it is (the audit picks the code)."""
    before, after = presets
    code = code_change("the code of run 0123abcd (commit 1a2b)", "this checkout's code", "reprolab.training")
    changes = [*derive_changes(before, after), code]
    labels = coalitions(changes)
    assert len(labels) == 2**5 and labels[frozenset({CODE})] == "before + training code"
    assert labels[frozenset(c.name for c in changes) - {CODE}] == "after - training code"
    assert apply_changes(before, [code], "after") == before
    assert apply_changes(before, changes, "after").model == after.model


# -- analysis on made-up results: the arithmetic and the verdict's logic ---------------------


SIZES = {"train": 1000, "val": 400, "test": 400}


def _labels(sizes=SIZES) -> dict[str, np.ndarray]:
    return {split: np.arange(n) % 2 for split, n in sizes.items()}


def _predictions(y: np.ndarray, accuracy: float, seed: int) -> list[int]:
    """Predictions of `y` with exactly round(accuracy * n) right, which ones depending on the seed."""
    wrong = np.random.default_rng(seed).permutation(len(y))[: len(y) - round(accuracy * len(y))]
    predicted = y.copy()
    predicted[wrong] = 1 - predicted[wrong]
    return predicted.tolist()


def _result(label: str, seed: int, val: float, train: float, labels=None, test=None) -> RunResult:
    labels = labels or _labels()
    accuracies = {"train": train, "val": val, "test": val if test is None else test}
    predictions = {split: _predictions(y, accuracies[split], seed) for split, y in labels.items()}
    metrics = {
        f"{split}_accuracy": float(np.mean(np.array(predicted) == labels[split]))
        for split, predicted in predictions.items()
    }
    return RunResult(
        preset=label, seed=seed, metrics=metrics, fit={}, history=[], dataset_digest="d", predictions=predictions
    )


def _results(table: dict[str, tuple[float, float]], seeds=(0, 1, 2), labels=None) -> list[RunResult]:
    """Each label's (val, train) with a small seed-dependent wobble."""
    return [
        _result(label, seed, val + 0.005 * seed, train - 0.005 * seed, labels)
        for label, (val, train) in table.items()
        for seed in seeds
    ]


TARGET = load_config([], CONF_DIR).data.target  # validation >= 0.85, training < 0.92
NO_TARGET = dataclasses.replace(TARGET, min_val_accuracy=None, max_train_accuracy=None)
TWO_CHANGES = [Change("dropout", {"model.dropout": (0.0, 0.3)}), Change("learning rate", {"train.lr": (0.01, 0.001)})]
CLEAR = {
    "before": (0.70, 1.00),
    "after": (0.90, 0.88),
    "before + dropout": (0.90, 0.88),  # = after - learning rate
    "before + learning rate": (0.72, 0.99),  # = after - dropout
}


def _summary(table, seeds=(0, 1, 2), sizes=SIZES, results=None, changes=TWO_CHANGES, target=TARGET):
    """The audit of made-up `results` (default: each label's (val, train) in `table`)."""
    labels = _labels(sizes)
    return summarize(
        results if results is not None else _results(table, seeds, labels),
        changes,
        "baseline",
        "regularized",
        target,
        0.95,
        {"before": "d", "after": "d"},
        {"before": labels, "after": labels},
    )


def test_needed_and_sufficient_follow_the_target_checks():
    summary = _summary(CLEAR)
    effects = {effect.change.name: effect for effect in summary.effects}
    assert (effects["dropout"].needed, effects["dropout"].sufficient) == ("yes", "yes")
    assert (effects["learning rate"].needed, effects["learning rate"].sufficient) == ("no", "no")
    alone = effects["dropout"].alone["val_accuracy"]
    assert alone.mean == pytest.approx(0.20) and alone.low > 0.1
    assert effects["dropout"].in_after["train_accuracy"].mean == pytest.approx(0.88 - 0.99)
    # Shapley: the mean of dropout's effect alone (+0.20) and on top of learning rate (+0.18).
    assert effects["dropout"].shapley["val_accuracy"].mean == pytest.approx(0.19)
    assert effects["learning rate"].shapley["val_accuracy"].mean == pytest.approx(0.01)
    assert summary.variants["after"].holds and not summary.variants["before"].holds
    assert summary.verdict.startswith("Regularized meets the target on 3/3 seeds (validation accuracy 0.905 [")
    for part in (
        "Without dropout it misses the target: it is needed",
        "Learning rate is not needed (the target holds without it)",
        "Dropout alone is enough",
        "validation accuracy moves by +0.200 [",
        "the Shapley shares of the validation change (they add up to it): dropout +0.190 [",
        "Dropout has the largest share that can be told from chance",
    ):
        assert part in summary.verdict, summary.verdict
    assert summary.warnings == []
    assert [step.change for step in summary.path] == ["dropout", "learning rate"]
    assert [step.holds for step in summary.path] == [True, True]


def test_intervals_cover_seeds_and_examples_and_stay_inside_their_bounds():
    summary = _summary(CLEAR)
    for check in summary.variants.values():
        for key in ("val_accuracy", "test_accuracy", "train_accuracy"):
            interval = check.stats[key]
            assert 0 <= interval.low <= interval.mean <= interval.high <= 1
    # 400 validation sequences, each seed wrong on its own random 10%: the seeds' mean per sequence
    # varies by about 0.09 / 3, so the sampling noise is +-1.96 * sqrt(0.03 / 400) ~ 0.017; the seeds
    # (0.900, 0.905, 0.910) add a standard error of 0.003 times t with 2 degrees of freedom.
    val = summary.variants["after"].stats["val_accuracy"]
    assert 0.017 < (val.high - val.low) / 2 < 0.03
    # Two configurations right on the very same sequences differ by nothing measured, but by up to
    # one sequence's weight in what the split allows: a narrow interval around 0, never none.
    same = _summary({**CLEAR, "before + dropout": CLEAR["after"]})
    nothing = same.effects[1].in_after["val_accuracy"]
    assert nothing.mean == 0 and -0.02 < nothing.low < 0 < nothing.high < 0.02


def test_a_tiny_split_gives_wide_intervals_inside_0_1_and_a_warning():
    tiny = {"train": 30, "val": 8, "test": 8}
    summary = _summary(
        {
            "before": (0.5, 1.0),
            "after": (1.0, 0.75),
            "before + dropout": (1.0, 0.75),
            "before + learning rate": (0.625, 1.0),
        },
        sizes=tiny,
    )
    val = summary.variants["after"].stats["val_accuracy"]
    assert 0 <= val.low <= val.high <= 1
    for check in summary.variants.values():
        for interval in check.stats.values():
            assert -1 <= interval.low <= interval.high <= 1
    # Every seed is right on all 8, yet 8 examples cannot show an accuracy of 1 robustly.
    assert not summary.variants["after"].interval_clears
    assert any("only 8 sequences" in warning for warning in summary.warnings)
    assert "does not meet the target robustly" in summary.verdict
    assert "validation accuracy" in summary.verdict and "the interval's worst end" in summary.verdict


def test_a_target_that_holds_only_on_some_seeds_does_not_hold():
    results = _results(
        {
            "before": (0.70, 1.00),
            "after": (0.90, 0.88),
            "before + dropout": (0.70, 1.0),
            "before + learning rate": (0.90, 0.88),
        }
    )
    results[3] = _result("after", 0, 0.80, 0.88)  # one seed of after misses the floor
    summary = _summary({}, results=results)
    after = summary.variants["after"]
    assert after.seeds_met == 2 and not after.holds
    assert all(effect.needed == "n/a" for effect in summary.effects)
    assert summary.verdict.startswith("Regularized does not meet the target robustly (2/3 seeds")
    assert "validation accuracy 0.800 < 0.85 (seed 0)" in summary.verdict  # the bound that failed


THREE_CHANGES = [*TWO_CHANGES, Change("hidden size", {"model.hidden_size": (128, 32)})]


def _known_game(names: frozenset) -> tuple[float, float]:
    """(val, train) as a known function of the changes: dropout +0.10, learning rate +0.05,
    hidden size +0.02 on validation, and dropout with learning rate +0.08 more together."""
    dropout, lr, hidden = ("dropout" in names, "learning rate" in names, "hidden size" in names)
    return (
        0.60 + 0.10 * dropout + 0.05 * lr + 0.02 * hidden + 0.08 * dropout * lr,
        0.99 - 0.03 * lr - 0.04 * dropout * lr,
    )


def test_a_known_game_gives_its_exact_shapley_values_and_interaction_and_the_shares_add_up():
    table = {label: _known_game(names) for names, label in coalitions(THREE_CHANGES).items()}
    summary = _summary(table, changes=THREE_CHANGES)
    val = summary.attribution["val_accuracy"]
    assert val.total.mean == pytest.approx(0.25, abs=1e-9)
    # Each change's own effect, plus half of every interaction it takes part in.
    expected = {"dropout": 0.10 + 0.04, "learning rate": 0.05 + 0.04, "hidden size": 0.02}
    assert {name: share.mean for name, share in val.shares.items()} == pytest.approx(expected, abs=1e-9)
    interactions = {pair: interval.mean for pair, interval in val.interactions.items()}
    assert interactions == pytest.approx(
        {("dropout", "learning rate"): 0.08, ("dropout", "hidden size"): 0.0, ("learning rate", "hidden size"): 0.0},
        abs=1e-9,
    )
    for key, attribution in summary.attribution.items():
        assert attribution.sum_error < 1e-9, key
        assert sum(share.mean for share in attribution.shares.values()) == pytest.approx(
            attribution.total.mean, abs=1e-9
        )
    assert [step.change for step in summary.path] == ["dropout", "learning rate", "hidden size"]
    assert summary.path[1].stats["val_accuracy"].mean == pytest.approx(0.83 + 0.005, abs=1e-9)  # seeds wobble by 0.005


def test_without_a_target_the_verdict_claims_none_and_attributes_the_change():
    summary = _summary(CLEAR, target=NO_TARGET)
    assert "meets the target" not in summary.verdict and "enough" not in summary.verdict
    assert "No target is set (data.target), so nothing is said about meeting one." in summary.verdict
    assert "the Shapley shares of the validation change (they add up to it): dropout +0.190" in summary.verdict
    assert {(e.needed, e.sufficient) for e in summary.effects} == {("n/a", "n/a")}
    assert [step.holds for step in summary.path] == [None, None]


def test_a_before_side_that_does_not_overfit_has_no_gap_to_close():
    summary = _summary(
        {
            "before": (0.86, 0.86),
            "after": (0.87, 0.86),
            "before + dropout": (0.86, 0.86),
            "before + learning rate": (0.87, 0.86),
        }
    )
    assert not summary.gap_before
    assert summary.verdict.startswith("Baseline does not overfit beyond noise (train-val gap ")
    assert "so there was no gap to close" in summary.verdict


def test_all_perfect_runs_on_tiny_splits_leave_every_interval_open_and_claim_nothing():
    tiny = {"train": 30, "val": 14, "test": 14}
    table = dict.fromkeys(("before", "after", "before + dropout", "before + learning rate"), (1.0, 1.0))
    summary = _summary(table, sizes=tiny, target=NO_TARGET)
    for check in summary.variants.values():
        val = check.stats["val_accuracy"]
        assert val.mean == 1.0 and val.low < 0.95
    for effect in summary.effects:
        for interval in (effect.shapley["val_accuracy"], effect.alone["val_accuracy"]):
            assert interval.mean == 0 and interval.low < 0 < interval.high
    assert "no gap to close" in summary.verdict
    assert "No change's share can be told from chance with these seeds and sequences." in summary.verdict
    assert any("only 14 sequences" in warning for warning in summary.warnings)


def _simulated_runs(correct: np.ndarray, labels: Labels, label: str) -> list[RunResult]:
    """Runs right exactly where `correct` (seeds x validation sequences) says, on val and test."""
    runs = []
    for seed, row in enumerate(correct):
        predictions = {
            split: np.where(row if split != "train" else True, y, 1 - y).tolist() for split, y in labels.items()
        }
        runs.append(
            RunResult(
                preset=label, seed=seed, metrics={}, fit={}, history=[], dataset_digest="d", predictions=predictions
            )
        )
    return runs


def _tally(covered: dict[str, int], bootstrap: Bootstrap, measures: dict, truth: dict[str, float]) -> None:
    """Count whether the 95% intervals of a and of b - a hold their true values."""
    covered["a"] += bootstrap.interval(measures["a"], 0.95, (0, 1)).contains(truth["a"])
    effect = bootstrap.interval(measures["b"] - measures["a"], 0.95, (-1, 1))
    covered["b - a"] += effect.contains(truth["b"] - truth["a"])


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_intervals_keep_their_coverage_with_few_seeds_that_vary(seeds):
    """A known truth: configuration a is right on a sequence when the sequence's difficulty
    (uniform, shared by seeds and configurations) is below 0.75 + the seed's offset, b below
    0.80 + its own offset; offsets spread by sd 0.05 across seeds. The true means are 0.75 and
    0.80 over sequences and seeds; their 95% intervals and b - a's must hold them in >= 93% of
    300 trials on 200 validation sequences."""
    rng = np.random.default_rng(seeds)
    n, trials, truth = 200, 300, {"a": 0.75, "b": 0.80}
    labels = {"train": np.zeros(4, int), "val": np.zeros(n, int), "test": np.zeros(n, int)}
    covered = {"a": 0, "b - a": 0}
    for _ in range(trials):
        difficulty = rng.random(n)
        measures = {}
        for label, mean in truth.items():
            correct = difficulty[None, :] < (mean + rng.normal(0, 0.05, seeds))[:, None]
            bootstrap = Bootstrap(seeds, {split: len(y) for split, y in labels.items()}, 1000)
            measures[label] = bootstrap.measure(_simulated_runs(correct, labels, label), labels, label)["val_accuracy"]
        _tally(covered, bootstrap, measures, truth)
    coverage = {key: count / trials for key, count in covered.items()}
    print(f"coverage with {seeds} seeds: {coverage}")
    assert min(coverage.values()) >= 0.93, coverage


def test_a_target_on_balanced_accuracy_judges_balanced_accuracy_over_the_seeds():
    """90 sequences of class 0 and 10 of class 1; every seed gets all of class 0 and half of class
    1 right: accuracy 0.95, balanced accuracy (1 + 0.5) / 2 = 0.75 by hand."""
    y = np.array([0] * 90 + [1] * 10)
    labels = {split: y for split in ("train", "val", "test")}
    right_half = y.copy()
    right_half[90:95] = 0
    results = [
        RunResult(
            preset="imbalanced",
            seed=seed,
            metrics={
                **{f"{split}_accuracy": 0.95 for split in labels},
                **{f"{split}_balanced_accuracy": 0.75 for split in labels},
            },
            fit={"best_epoch": 1},
            history=[],
            dataset_digest="d",
            predictions={split: right_half.tolist() for split in labels},
        )
        for seed in (0, 1, 2)
    ]
    on_accuracy = dataclasses.replace(TARGET, min_val_accuracy=0.85, max_train_accuracy=None)
    on_balanced = dataclasses.replace(on_accuracy, metric=TargetMetric.balanced_accuracy)
    assert describe_target(on_balanced) == "validation balanced accuracy >= 0.85"
    plain = seed_checks(results, labels, on_accuracy, 0.95)["imbalanced"]
    balanced = seed_checks(results, labels, on_balanced, 0.95)["imbalanced"]
    assert plain.stats["val_accuracy"].mean == pytest.approx(0.95)
    assert balanced.stats["val_balanced_accuracy"].mean == pytest.approx(0.75)
    assert balanced.stats["train_balanced_accuracy"].mean == pytest.approx(0.75)
    # Ten sequences of class 1 leave room: the interval is wide but holds the mean inside [0, 1].
    interval = balanced.stats["val_balanced_accuracy"]
    assert 0.0 <= interval.low < 0.70 and 0.80 < interval.high <= 1.0
    assert plain.holds and plain.judged() == "yes"
    assert not balanced.holds and balanced.seeds_met == 0
    assert "validation balanced accuracy 0.750 < 0.85 (seed 0)" in balanced.missed
    # The audit's verdict speaks of the metric the target names.
    runs = [dataclasses.replace(r, preset=label) for label in ("before", "after", "before + dropout") for r in results]
    sides = {"before": "d", "after": "d"}
    summary = summarize(runs, TWO_CHANGES[:1], "b", "a", on_balanced, 0.95, sides, dict.fromkeys(sides, labels))
    assert "validation balanced accuracy" in summary.verdict and "validation accuracy" not in summary.verdict
    assert set(summary.attribution) >= {"val_balanced_accuracy", "test_balanced_accuracy"}


def _with_fit(results: list[RunResult]) -> list[RunResult]:
    return [dataclasses.replace(r, fit={"best_epoch": 5, "epochs_run": 8, "stopped_early": True}) for r in results]


def test_with_no_target_no_table_file_or_tag_says_yes():
    """One rule (`target_met`): with no bound set, nothing holds or fails: every table, the
    audit's summary.json, the comparison's cells, metrics.json and the MLflow tags say n/a or
    leave it out, even for a configuration at a one-class 0.5."""
    from reprolab.audit.report import audit_markdown
    from reprolab.audit.summary import summary_json
    from reprolab.metrics import met_tag, target_met
    from reprolab.report import comparison_table, per_seed_table
    from reprolab.stages.evaluate import evaluate

    summary = _summary({**CLEAR, "before": (0.5, 0.5)}, target=NO_TARGET)
    markdown = audit_markdown(summary, {"before": "b", "after": "a"}, "id", 0)
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    assert rows and not any("yes" in row or "| no |" in row for row in rows), markdown
    checked = [row for row in rows if row.endswith("| n/a | n/a | **n/a** |")]
    assert len(checked) == len(summary.variants), markdown
    configurations = summary_json(summary, "id", 0)["configurations"]
    for values in configurations.values():
        assert (values["holds"], values["seeds_met"], values["intervals_clear"]) == (None, None, None)
    results = _with_fit(_results({"baseline": (0.5, 0.5), "regularized": (0.9, 0.88)}))
    checks = seed_checks(results, _labels(), NO_TARGET, 0.95)
    for table in (comparison_table(results, checks, NO_TARGET), per_seed_table(results, NO_TARGET)):
        assert "yes" not in table and "| no" not in table and table.count("| n/a |") == table.count("\n") - 1, table
    assert "target_met" not in evaluate({"metrics": results[0].metrics}, NO_TARGET)
    assert met_tag(target_met(results[0].metrics, NO_TARGET)) == "n/a"
    assert met_tag(target_met(results[-1].metrics, TARGET)) == "true"


def test_no_seed_meeting_the_target_is_said_so_though_the_intervals_cannot_rule_it_out():
    from reprolab.report import seeds_verdict

    tiny = {"train": 30, "val": 14, "test": 14}
    results = _with_fit(_results({"close": (0.786, 0.80)}, labels=_labels(tiny)))  # 11 of 14, under 0.85
    (check,) = seed_checks(results, _labels(tiny), TARGET, 0.95).values()
    assert check.seeds_met == 0 and check.judged() == "cannot tell", check
    said = seeds_verdict(check, TARGET)
    assert said.startswith("no seed met it (0/3 seeds), but the intervals cannot rule it out: validation accuracy")


def test_two_shares_within_noise_of_each_other_name_no_largest_and_a_clear_lead_does():
    """Dropout and the learning rate each add 0.10 (shares of +0.10 each): both can be told from
    chance but not from each other, so neither is called the largest; with dropout at +0.15 and
    the learning rate at +0.05 on 400 sequences, dropout's lead is clear."""
    from reprolab.audit.summary import summary_json

    even = {"before": (0.70, 1.0), "after": (0.90, 0.88), "before + dropout": (0.80, 0.95)}
    summary = _summary({**even, "before + learning rate": (0.80, 0.95)})
    lead = summary.attribution["val_accuracy"].lead
    assert lead is not None and not lead.clear and lead.size_difference.contains(0.0)
    assert "largest share" not in summary.verdict, summary.verdict
    assert "so neither is named the largest" in summary.verdict, summary.verdict
    written = summary_json(summary, "id", 0)["attribution"]["val_accuracy"]["lead"]
    assert set(written) == {"largest", "next", "size_difference"}
    uneven = _summary({**even, "before + dropout": (0.85, 0.92), "before + learning rate": (0.75, 0.97)})
    lead = uneven.attribution["val_accuracy"].lead
    assert lead.largest == "dropout" and lead.clear, lead
    assert "Dropout has the largest share that can be told from chance" in uneven.verdict, uneven.verdict


def test_every_runs_warning_reaches_the_report_once_per_kind_with_how_many_runs():
    from reprolab.results import runs_warnings

    labels = _labels()
    results = _with_fit(_results({"baseline": (0.6, 0.5), "regularized": (0.9, 0.88)}))
    results = [dataclasses.replace(r, fit={**r.fit, "best_epoch": 1}) if r.preset == "baseline" else r for r in results]
    train = dict.fromkeys(("baseline", "regularized"), labels["train"])
    warnings = runs_warnings(results, train, ["the inputs end in zero-padding", "the inputs end in zero-padding"])
    assert warnings[0] == "the inputs end in zero-padding" and len(warnings) == 3, warnings
    did_not_fit, early = warnings[1:]
    assert did_not_fit.startswith("3 of 6 runs (baseline seed 0, baseline seed 1, baseline seed 2); baseline seed 0:")
    assert "did not fit the training data" in did_not_fit
    assert early.startswith("3 of 6 runs (baseline seed 0,") and "best epoch at 1" in early


def test_an_audit_made_again_from_moved_runs_names_each_claim_that_changed():
    """`recheck`'s core: the same runs make every claim again; runs that moved a little keep every
    claim and say which mean moved most; an after side that fell below the target changes the
    claims that rest on it (it meets the target, each change is needed), and only those."""
    from reprolab.audit.recheck import audit_claims, audit_numbers, changed

    def made(summary):
        return audit_claims(summary), audit_numbers(summary)

    recorded = made(_summary(CLEAR))
    same = changed(recorded, made(_summary(CLEAR)))
    assert same["changed"] == [] and same["largest_move"]["difference"] == 0 and same["claims"] > 8, same
    assert recorded[0]["after meets the target"] == "yes" and recorded[0]["the largest share of val_accuracy"]
    nudged = {**CLEAR, "after": (0.9025, 0.88)}  # one more right validation sequence in every seed
    moved = changed(recorded, made(_summary(nudged)))
    assert moved["changed"] == [], moved["changed"]
    assert moved["largest_move"]["mean"] == "after val_accuracy", moved
    assert abs(moved["largest_move"]["difference"] - 0.0025) < 1e-9, moved
    fallen = changed(recorded, made(_summary({**CLEAR, "after": (0.80, 0.88)})))
    claims = {c["claim"]: (c["recorded"], c["now"]) for c in fallen["changed"]}
    assert claims["after meets the target"] == ("yes", "no"), claims
    assert "before + dropout meets the target" not in claims, claims


@pytest.mark.parametrize("seeds", [3, 5])
def test_kfold_intervals_keep_their_coverage_over_folds_and_seeds(seeds):
    """A known truth on a small set, measured by 5-fold x 2 (`pool_folds`): 40 pooled sequences of
    2 classes (the 8 of a fold are all a holdout audit would have). A fold's model of configuration
    a is right on a held-out sequence when the sequence's difficulty (uniform, shared by every run)
    is below 0.70 + its seed's offset + its own offset (each sd 0.05: the seed's init, and the
    fold's training sequences); b likewise at 0.78. The true means are 0.70 and 0.78 over
    sequences, seeds and folds; the 95% intervals of a and of b - a must hold them in >= 92% of
    300 trials."""
    from reprolab.audit.measure import pool_folds
    from reprolab.data.folds import fold_indices

    rng = np.random.default_rng(seeds)
    trials, truth = 300, {"a": 0.70, "b": 0.78}
    y, y_test = np.arange(40) % 2, np.arange(60) % 2
    labels = {"train": y, "val": y, "test": y_test}
    indices = fold_indices(y, 5, 2, 0)
    bootstrap = Bootstrap(seeds, {split: len(values) for split, values in labels.items()}, 1000)
    covered = {"a": 0, "b - a": 0}
    for _ in range(trials):
        difficulty, test_difficulty = rng.random(len(y)), rng.random(len(y_test))
        measures = {}
        for label, mean in truth.items():
            runs = []
            for seed in range(seeds):
                offset = rng.normal(0, 0.05)
                for index, (train, val) in enumerate(indices):
                    skill = mean + offset + rng.normal(0, 0.05)
                    predictions = {
                        "train": y[train].tolist(),
                        "val": np.where(difficulty[val] < skill, y[val], 1 - y[val]).tolist(),
                        "test": np.where(test_difficulty < skill, y_test, 1 - y_test).tolist(),
                    }
                    runs.append((RunResult(label, seed, {}, {}, [], "d", predictions), index))
            pooled = pool_folds(runs, indices, labels)
            assert len(pooled) == seeds and all(p.metrics["train_accuracy"] == 1.0 for p in pooled)
            measures[label] = bootstrap.measure(pooled, labels, label)["val_accuracy"]
        _tally(covered, bootstrap, measures, truth)
    coverage = {key: count / trials for key, count in covered.items()}
    print(f"k-fold coverage with {seeds} seeds: {coverage}")
    assert min(coverage.values()) >= 0.92, coverage
