"""App settings added for safety and deployment: the model check mode and the proxy path prefix."""
import pytest

from mvp.app.config import ConfigError, load_config


def test_model_check_defaults_to_auto_and_yaml_on_off_means_on_off(tmp_path):
    assert load_config([]).model_check == "auto"
    for raw, mode in (("on", "on"), ("off", "off"), ("auto", "auto")):
        path = tmp_path / f"{raw}.yaml"
        path.write_text(f"model_check: {raw}\n", encoding="utf-8")  # YAML 1.1 reads on/off as booleans
        assert load_config(["--config", str(path)]).model_check == mode


@pytest.mark.parametrize("argv, key", [(["--model-check", "maybe"], None),
                                       (["--model-check-timeout-s", "0"], "model_check_timeout_s"),
                                       (["--root-path", "counsel/"], "root_path")])
def test_bad_values_are_refused_naming_the_key(argv, key):
    if key is None:  # argparse refuses an unknown choice itself
        with pytest.raises(SystemExit):
            load_config(argv)
        return
    with pytest.raises(ConfigError, match=key):
        load_config(argv)


def test_a_root_path_is_accepted():
    assert load_config(["--root-path", "/counsel"]).root_path == "/counsel"
