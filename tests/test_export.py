"""``bootstrapper export --hub``: the classifier folder and its card reach the Hub in one commit, through
huggingface_hub over HTTP, against a local stand-in of the Hub's upload API (no Hub is reachable here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.hub_server import HubServer
from tests.pipeline_helpers import REPO


def _export(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_TOKEN", "HUGGING_FACE"))}
    return subprocess.run([sys.executable, "-m", "handlers.cli", "export", *args], cwd=REPO,
                          env={**base, **env}, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def classifier(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    folder = tmp_path / "classifier_2"
    folder.mkdir()
    for f in tiny_bert_dir.iterdir():
        if f.is_file():
            (folder / f.name).write_bytes(f.read_bytes())
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n# classifier_2\n")
    return folder


def test_export_pushes_every_file_in_one_commit(classifier: Path) -> None:
    with HubServer("hf_stand_in_token") as hub:
        result = _export([str(classifier), "--hub", "me/sms-spam", "--private"],
                         {"HF_TOKEN": "hf_stand_in_token", "HF_ENDPOINT": hub.url})
        assert result.returncode == 0, result.stderr[-2000:]
        assert "pushed" in result.stdout and "me/sms-spam" in result.stdout
        repo = hub.state.repos["me/sms-spam"]
        assert repo["private"] is True and len(hub.state.commits) == 1
        expected = {p.name: p.read_bytes() for p in classifier.iterdir()}
        assert repo["files"] == expected, "every file, byte for byte, the card included"
        assert hub.state.unexpected == []
        assert hub.state.validated == [(classifier / "README.md").read_text()], "the card's metadata was checked"


def test_export_needs_a_token_and_names_a_refused_one(classifier: Path) -> None:
    missing = _export([str(classifier), "--hub", "me/x"], {})
    assert missing.returncode == 2 and "HF_TOKEN" in missing.stderr
    with HubServer("hf_right") as hub:
        wrong = _export([str(classifier), "--hub", "me/x"], {"HF_TOKEN": "hf_wrong", "HF_ENDPOINT": hub.url})
        assert wrong.returncode == 1 and "HF_TOKEN" in wrong.stderr and "401" in wrong.stderr
        assert hub.state.refused >= 1 and hub.state.repos == {}


def test_a_folder_without_a_model_card_is_refused(classifier: Path) -> None:
    (classifier / "README.md").unlink()
    result = _export([str(classifier), "--hub", "me/x"], {"HF_TOKEN": "t", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert result.returncode == 2 and "model card" in result.stderr
