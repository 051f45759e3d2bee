"""Promotion against a real (SQLite) registry: compare-and-set on the alias."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tasks.tracking.champion import decide_promotion
from tests.e2e.processes import pointed_at
from trustflow.config import RegistryConfig
from trustflow.errors import PromotionConflict
from trustflow.promotion import Comparison

REGISTRY = RegistryConfig(model_name="m")


@pytest.fixture
def client(tmp_path: Path):
    with pointed_at(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        client = MlflowClient()
        client.create_registered_model("m")
        for _ in range(4):
            client.create_model_version("m", source=str(tmp_path))
        client.set_registered_model_alias("m", "champion", "1")
        yield client


def _versus(champion: float) -> Comparison:
    return Comparison(challenger=0.90, champion=champion, rows=200, md5="x", basis="200 rows")


def test_a_champion_moved_after_the_decision_is_decided_against_again(client) -> None:
    compared = []

    def compare(champion) -> Comparison:
        compared.append(str(champion.version))
        if str(champion.version) == "1":  # while this run scores, another promotes v3
            client.set_registered_model_alias("m", "champion", "3")
            return _versus(0.80)  # v2 beats v1 ...
        return _versus(0.95)  # ... but not v3

    promotion = decide_promotion("2", True, 0.90, REGISTRY, compare)
    assert compared == ["1", "3"]
    assert not promotion.promoted and promotion.previous_champion == "3"
    assert "does not beat v3's 0.9500" in promotion.reason
    assert client.get_model_version_by_alias("m", "champion").version == 3


def test_a_champion_that_keeps_moving_is_left_where_the_others_put_it(client) -> None:
    others = itertools.cycle(["3", "4"])

    def compare(champion) -> Comparison:
        client.set_registered_model_alias("m", "champion", next(others))
        return _versus(0.80)

    with pytest.raises(PromotionConflict, match="m@champion was moved by other runs 3 times"):
        decide_promotion("2", True, 0.90, REGISTRY, compare)
    assert client.get_model_version_by_alias("m", "champion").version == 3


def test_without_interference_the_better_version_takes_the_alias(client) -> None:
    promotion = decide_promotion("2", True, 0.90, REGISTRY, lambda champion: _versus(0.80))
    assert promotion.promoted and promotion.previous_champion == "1"
    assert client.get_model_version_by_alias("m", "champion").version == 2
