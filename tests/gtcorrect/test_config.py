import pytest

from gtcorrect.config import GStageConfig, NetConfig, TrainConfig


def test_config_round_trips_through_json() -> None:
    config = TrainConfig(
        method="coteaching",
        image_size=64,
        net=NetConfig(channels=(8, 16, 32), strides=(2, 2)),
        g=GStageConfig(rounds_max=2, sample_loss="ce"),
    )
    again = TrainConfig.from_json(config.to_json())
    assert again == config
    assert again.net.channels == (8, 16, 32)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "magic"}, "method must be one of"),
        ({"image_size": 100}, "multiple of 16"),
        ({"g": {"tau": 1.5}}, "g.tau"),
        ({"learning_rate": 0.1}, "unknown TrainConfig field"),
        ({"net": {"width": 3}}, "unknown NetConfig field"),
        ({"net": {"channels": 16}}, "expects a list"),
    ],
)
def test_bad_config_names_the_value(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(data)
