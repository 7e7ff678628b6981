"""``bootstrapper plan`` estimates: call counts capped by the data, litellm prices, honest unknowns."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from core.config import Settings, load_settings
from core.errors import NoUsableChunks
from core.llm.ledger import cost_of
from core.run.plan import LABEL_TOKENS_OUT, PlanEstimate, estimate, even_sample, format_plan, label_counts
from core.schema import Chunk


def settings(large: str = "openai/gpt-4o", small: str = "openai/gpt-4o-mini", **training: int) -> Settings:
    sizes = {"test_set_size": 200, "train_set_size": 200, "train_set_increment": 100, "max_iters": 3, **training}
    lines = "\n".join(f"  {k}: {v}" for k, v in sizes.items())
    return load_settings(
        "classification:\n  classes: [spam, ham]\n  desc: Spam sells or scams; ham is personal mail.\n"
        f"api:\n  large_model: {large}\n  small_model: {small}\n  rules_max_tokens: 1000\n"
        f"training:\n{lines}\n"
    )


def chunks(n: int, text: str = "hello there, this is an ordinary message about lunch. " * 10) -> list[Chunk]:
    return [Chunk(id=f"c{i}", text=text, source="a.txt", position=i) for i in range(n)]


def by_stage(est: PlanEstimate, scenario: str) -> dict[str, dict[str, object]]:
    sc = est.minimum if scenario == "min" else est.maximum
    return {s.stage: asdict(s) for s in sc.stages}


@pytest.mark.parametrize(
    ("n", "expected"),
    # the test set takes at most half the chunks (core.run.splits.test_size_for), as the real split does
    [(1000, (200, 200, 400)), (500, (200, 200, 300)), (450, (200, 200, 250)), (350, (175, 175, 175)),
     (50, (25, 25, 25))],
    ids=["plenty", "max-capped", "min-capped", "test-halved", "small"],
)
def test_label_counts_are_capped_by_available_chunks(n: int, expected: tuple[int, int, int]) -> None:
    assert label_counts(n, 200, 200, 100, 3) == expected


@pytest.mark.parametrize(("n", "test", "train_min", "train_max"), [(1000, 200, 200, 400), (350, 175, 175, 175)],
                         ids=["plenty", "capped"])
def test_estimate_counts_calls_per_stage(n: int, test: int, train_min: int, train_max: int) -> None:
    est = estimate(settings(), chunks(n))
    mins, maxs = by_stage(est, "min"), by_stage(est, "max")
    assert [s.stage for s in est.minimum.stages] == ["rules", "test_labels", "train_labels"]
    assert mins["rules"]["calls"] == 1 and mins["rules"]["model"] == "openai/gpt-4o"
    assert mins["test_labels"]["calls"] == test and mins["test_labels"]["model"] == "openai/gpt-4o"
    assert mins["train_labels"]["calls"] == train_min and mins["train_labels"]["model"] == "openai/gpt-4o-mini"
    assert maxs["train_labels"]["calls"] == train_max
    assert est.maximum.totals["calls"] == 1 + test + train_max
    assert mins["test_labels"]["tokens_out"] == test * LABEL_TOKENS_OUT


def test_known_models_are_priced_from_the_cost_map() -> None:
    est = estimate(settings(), chunks(1000))
    for sc in (est.minimum, est.maximum):
        for s in sc.stages:
            assert s.cost_known and s.cost_usd > 0
            assert s.cost_usd == pytest.approx(cost_of(s.model, s.tokens_in, s.tokens_out)[0])
        assert sc.totals["cost_known"]
    assert est.maximum.totals["cost_usd"] > est.minimum.totals["cost_usd"]
    assert not any("not in litellm's cost map" in a for a in est.assumptions)


def test_label_prompt_size_tracks_rules_and_chunk_length() -> None:
    base = estimate(settings(), chunks(1000))
    longer_rules = estimate(settings(), chunks(1000), rules_prompt_tokens=base_rules(base) + 100)
    per_call = per_label_in(longer_rules) - per_label_in(base)
    assert per_call == pytest.approx(100, abs=1)
    assert longer_rules.minimum.stages[0].tokens_out == base_rules(base) + 100  # the rules reply itself

    doubled = estimate(settings(), chunks(1000, text="hello there, this is an ordinary message. " * 40))
    assert per_label_in(doubled) > per_label_in(base) + 100


def base_rules(est: PlanEstimate) -> int:
    return est.minimum.stages[0].tokens_out


def per_label_in(est: PlanEstimate) -> float:
    test = est.minimum.stages[1]
    return test.tokens_in / test.calls


def test_unknown_models_cost_zero_with_a_note_and_chars_over_four() -> None:
    text = "x" * 4000
    est = estimate(settings(large="openai/oracle-large", small="openai/oracle-small"), chunks(400, text=text))
    for s in est.maximum.stages:
        assert s.cost_usd == 0 and not s.cost_known
    assert not est.maximum.totals["cost_known"]
    notes = "\n".join(est.assumptions)
    assert "openai/oracle-large: not in litellm's cost map" in notes
    assert "openai/oracle-small: not in litellm's cost map" in notes
    # 1000 tokens of chunk + 500 of rules (rules_max_tokens / 2) + the prompt scaffold
    assert 1500 < per_label_in(est) < 1500 + 400
    assert "unknown" in format_plan(est)


def test_mixed_known_and_unknown_models() -> None:
    est = estimate(settings(small="hosted_vllm/local-llama"), chunks(600))
    stages = by_stage(est, "max")
    assert stages["test_labels"]["cost_known"] and stages["test_labels"]["cost_usd"] > 0
    assert not stages["train_labels"]["cost_known"] and stages["train_labels"]["cost_usd"] == 0
    table = format_plan(est)
    assert f">= {est.maximum.totals['cost_usd']:.4f}" in table  # a floor, not a total


def test_format_plan_shows_both_scenarios() -> None:
    est = estimate(settings(), chunks(1000))
    table = format_plan(est)
    lines = table.splitlines()
    assert lines[0].startswith("Plan for 1,000 chunks")
    assert sum(line.startswith("min") for line in lines) == 4 and sum(line.startswith("max") for line in lines) == 4
    max_total = next(line for line in lines if line.startswith("max") and "TOTAL" in line)
    assert max_total.split()[2] == f"{est.maximum.totals['calls']:,}"
    assert f"{est.maximum.totals['cost_usd']:.4f}" in max_total
    assert "Assumptions:" in table and "openai/gpt-4o-mini" in table
    assert est.to_dict()["max"]["totals"]["calls"] == est.maximum.totals["calls"]


def test_no_chunks_is_an_error() -> None:
    with pytest.raises(NoUsableChunks):
        estimate(settings(), [])


def test_even_sample_spreads_over_the_list() -> None:
    items = chunks(10)
    assert [c.position for c in even_sample(items, 5)] == [0, 2, 4, 6, 8]
    assert even_sample(items, 20) == items
    assert len(even_sample(chunks(5000), 1000)) == 1000
    assert [c.position for c in even_sample(items, 3)] == [0, 3, 6]


def test_caching_is_priced_where_it_applies_and_only_there() -> None:
    """gpt-4o's 50% cached rate never pays for padding a ~400-token prefix: no saving is claimed. gpt-4.1's 75%
    does: the plan prices the padded prefix at the cached rate (cheaper), and says so in its assumptions."""
    from core.llm.prompt_cache import prefix_cost

    plain = estimate(settings(), chunks(1000), rules_prompt_tokens=330)  # the SMS example's ~409-token prefix
    assert plain.maximum.totals["cached_cost_usd"] == pytest.approx(plain.maximum.totals["cost_usd"])
    assert any("openai/gpt-4o: the ~4" in a and "not cached" in a for a in plain.assumptions)
    assert "Prompt caching saves" not in format_plan(plain)
    # Longer rules tip gpt-4o too: a ~830-token prefix read at half price beats paying it in full.
    longer = estimate(settings(), chunks(1000), rules_prompt_tokens=750)
    assert any(a.startswith("openai/gpt-4o: ") and "padded to ~1045" in a for a in longer.assumptions)
    assert longer.maximum.totals["cached_cost_usd"] < longer.maximum.totals["cost_usd"]

    est = estimate(settings("openai/gpt-4.1", "openai/gpt-4.1-mini"), chunks(1000), rules_prompt_tokens=330)
    test = next(s for s in est.maximum.stages if s.stage == "test_labels")
    assert test.cached_cost_usd < test.cost_usd
    note = next(a for a in est.assumptions if a.startswith("openai/gpt-4.1: "))
    assert "padded to ~1045 tokens" in note
    # The saving is the prefix's: full rate on the unpadded prefix, minus the padded prefix under the cache.
    prefix = int(note.split("~")[1].split("-token")[0])
    full = cost_of("openai/gpt-4.1", test.calls * prefix, 0)[0]
    assert test.cost_usd - test.cached_cost_usd == pytest.approx(
        full - prefix_cost("openai/gpt-4.1", 1045, test.calls), rel=0.02)
    text = format_plan(est)
    assert "with caching" in text and "Prompt caching saves ~$" in text


def test_a_provider_without_known_caching_is_not_assumed_cached() -> None:
    est = estimate(settings("mistral/mistral-large-latest", "mistral/mistral-small-latest"), chunks(300))
    assert est.maximum.totals["cached_cost_usd"] == pytest.approx(est.maximum.totals["cost_usd"])
    assert any("no prompt caching assumed" in a for a in est.assumptions)
