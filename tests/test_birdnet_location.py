"""BirdNET's location/season filter (the meta-model shipped beside the classifier)."""

from __future__ import annotations

import pytest

from rl_core import load_class_mapping
from rl_core.birdnet_location import expected_species_mask, week_of
from rl_core.cache import get_model
from rl_core.errors import ConfigError
from rl_core.inference import analyse_recording


@pytest.fixture(scope="module")
def index():
    return load_class_mapping("birdnet_v2_4")["label_to_index"]


def test_ithaca_in_may_and_oxford_in_april(index):
    ithaca = expected_species_mask(42.44, -76.50, week_of(5, 15))
    assert ithaca[index["Geothlypis trichas"]] and not ithaca[index["Parus major"]]
    assert 100 < ithaca.sum() < 200
    oxford = expected_species_mask(51.75, -1.26, week_of(4, 15))
    assert oxford[index["Parus major"]] and not oxford[index["Geothlypis trichas"]]


def test_filter_changes_reported_species_only(great_tits, index):
    model = get_model("birdnet_v2_4")
    ithaca = expected_species_mask(42.44, -76.50, week_of(5, 15))
    result = analyse_recording(model, great_tits[0].path, class_mask=ithaca)
    assert result.top_k_table(1).scientific_name[0] != "Parus major"  # not expected in Ithaca
    assert result.scores[0, index["Parus major"]] > 0.5  # raw scores are kept


def test_bad_coordinates_and_weeks():
    with pytest.raises(ConfigError, match="latitude"):
        expected_species_mask(120, 0, 10)
    with pytest.raises(ConfigError, match="week must be 1-48"):
        expected_species_mask(50, 0, 49)
    assert week_of(1, 1) == 1 and week_of(12, 31) == 48
