import pytest

from gtcorrect.config import ConfigLimits, GStageConfig, NetConfig, TrainConfig, check_config, schedule_epochs
from gtcorrect.errors import ConfigError


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
    ("data", "field", "message"),
    [
        ({"method": "magic"}, "method", "must be one of 'gt'"),
        ({"image_size": 100}, "image_size", "multiple of 16"),
        # The deepest level of the default network would be 1x1 (instance norm cannot train on it).
        ({"image_size": 16}, "image_size", "at least 32"),
        ({"image_size": 8192}, "image_size", "limit of 1024"),
        ({"g": {"tau": 1.5}}, "g.tau", "must be <= 1"),
        ({"g": {"warmup_epochs": 0}}, "g.warmup_epochs", ">= 1"),
        ({"g": "fast"}, "g", "expects an object"),
        ({"learning_rate": 0.1}, "learning_rate", "unknown field"),
        ({"net": {"width": 3}}, "net.width", "unknown field"),
        ({"net": {"channels": 16}}, "net.channels", "expects a list"),
        ({"net": {"channels": [16, "a"]}}, "net.channels[1]", "expects an integer"),
        ({"net": {"channels": [16, 32], "strides": [2, 2]}}, "net.strides", "one stride per level"),
        ({"net": {"channels": [16, 4096], "strides": [2]}}, "net.channels", "limit of 1024"),
        ({"lr": "abc"}, "lr", "expects a finite number"),
        ({"lr": -1}, "lr", "must be > 0"),
        ({"seed": True}, "seed", "expects an integer"),
        ({"num_workers": 512}, "num_workers", "limit of 8"),
        ({"t": {"epochs": 1_000_000_000}}, "t.epochs", "limit is 500"),
        ({"method": "noisy", "epochs": 10_000}, "epochs", "limit is 500"),
        ({"t": {"correction": "fuzzy"}}, "t.correction", "'hard', 'soft', 'none'"),
        ({"quality": {"selftest_families": ["weird"]}}, "quality.selftest_families[0]", "'dilation'"),
        ({"quality": {"selftest_families": []}}, "quality.selftest_families", "at least one family"),
        ({"quality": {"val_fraction": 0.9}}, "quality.val_fraction", "<= 0.5"),
    ],
)
def test_bad_config_names_the_field(data: dict, field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.from_dict(data, ConfigLimits())
    assert err.value.field == field


def test_limits_are_the_operators_and_the_engine_rules_always_apply() -> None:
    long = {"t": {"epochs": 1000}}
    config = TrainConfig.from_dict(long)  # the engine alone sets no upper bound on epochs
    assert schedule_epochs(config) == 10 + 5 * 5 + 1000
    TrainConfig.from_dict(long, ConfigLimits(max_epochs=2000))
    with pytest.raises(ConfigError, match="limit is 100"):
        check_config(config, ConfigLimits(max_epochs=100))
    # Configs built in code are checked by the same rules, types included.
    with pytest.raises(ConfigError, match="g.sample_loss"):
        check_config(TrainConfig(g=GStageConfig(sample_loss="magic")))  # type: ignore[arg-type]
    assert TrainConfig.from_dict({"image_size": 48}).image_size == 48  # 48 / 16 = 3 px at the bottom


def test_stored_configs_with_retired_fields_still_load() -> None:
    # A model file or job row written when the GMM scaling was 'robust_iqr' (commits 63c2c4a..e1af578).
    stored = TrainConfig().to_dict()
    stored["g"]["robust_iqr"] = 3.0
    assert TrainConfig.from_stored(stored) == TrainConfig()
    with pytest.raises(ConfigError, match="unknown field"):
        TrainConfig.from_dict(stored)  # user input is not forgiven
