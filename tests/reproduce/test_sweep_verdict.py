"""What reproducing a sweep's summary run says of the sweep (`reproduce.run.stands`), made from
its runs' outcomes and the claims made again from them (`audit.recheck`), without training."""

from __future__ import annotations

from types import SimpleNamespace

from reprolab.reproduce.judge import DIFFERS, IDENTICAL, WITHIN_NOISE, Outcome
from reprolab.reproduce.run import stands

AUDIT = SimpleNamespace(data=SimpleNamespace(tags={"reprolab.kind": "audit-summary"}))


def _outcomes(*verdicts: str) -> list[Outcome]:
    return [Outcome(f"id{i}", f"run {i}", verdict) for i, verdict in enumerate(verdicts)]


def _made_again(changed: list[dict], difference: float = 0.004) -> dict:
    moved = {"mean": "after val_accuracy", "recorded": 0.874, "now": 0.874 + difference, "difference": difference}
    return {"claims": 12, "changed": changed, "largest_move": moved, "unavailable": None, "same_as_recorded": True}


def test_identical_runs_keep_the_verdict_without_making_it_again():
    text, holds = stands(AUDIT, _outcomes(IDENTICAL, IDENTICAL), reused=1)
    assert holds and text == (
        "the audit's verdict stands: every run it rests on is identical (2 runs checked, 1 trained for it and 1 it "
        "reused: 2 identical)"
    )


def test_runs_within_noise_whose_claims_are_the_same_keep_the_verdict_and_name_the_largest_move():
    text, holds = stands(AUDIT, _outcomes(IDENTICAL, WITHIN_NOISE), made_again=_made_again([]))
    assert holds, text
    assert text.startswith("the audit's verdict stands: made again from the reproduced runs, its 12 claims are")
    assert "the mean that moved most: after val_accuracy 0.8740 recorded, 0.8780 now" in text


def test_a_claim_that_changed_breaks_the_verdict_even_when_every_run_stands_on_its_own():
    changed = [{"claim": "after meets the target", "recorded": "yes", "now": "cannot tell"}]
    text, holds = stands(AUDIT, _outcomes(WITHIN_NOISE, WITHIN_NOISE), made_again=_made_again(changed))
    assert not holds
    assert text.startswith(
        "the audit's verdict does not stand: made again from the reproduced runs, after meets the target: yes "
        "recorded, cannot tell now"
    ), text
    assert "every run it rests on stands" in text


def test_a_verdict_that_could_not_be_made_again_is_not_claimed_and_a_differing_run_fails_it():
    unavailable = {"unavailable": "cannot make it again here: the audit's run holds no audit-summary/summary.json"}
    text, holds = stands(AUDIT, _outcomes(WITHIN_NOISE, DIFFERS), made_again=unavailable)
    assert not holds and "1 of 2 runs do not stand" in text and "was not made again" in text, text
    assert "holds no audit-summary/summary.json" in text
