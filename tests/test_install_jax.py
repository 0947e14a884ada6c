"""`scripts/install_jax.py`: the two pip commands that install lora-keras for JAX without TensorFlow.

What the commands install was tried in fresh venvs (docs/gpu.md); here, that they are built from
setup.cfg and keras-hub's metadata as they are now, and leave out exactly TensorFlow's packages.
"""

import configparser
import importlib.metadata
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import install_jax  # noqa: E402


def setup_cfg(section, key):
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    return install_jax.lines(config[section][key])


def test_step_two_is_setup_cfg_and_keras_hubs_requirements_less_tensorflow():
    ours = install_jax.setup_cfg_requirements()
    theirs = install_jax.keras_hub_requirements()  # keras-hub is installed in the test venv
    command = install_jax.step_two(ours, theirs, ["jax[cuda12]>=0.10"])
    names = {install_jax.name_of(r) for r in command[1:]}
    assert not {n for n in names if n.startswith("tensorflow")} and "tf-keras" not in names
    assert "keras-hub" not in names and "jax" in names and "six" in names
    # Every other requirement of both lists is there, with its specifier.
    for requirement in setup_cfg("options", "install_requires") + setup_cfg("options.extras_require", "jax"):
        if install_jax.name_of(requirement) not in {"tensorflow", "keras-hub"}:
            assert requirement in command, requirement
    keras_hub_own = [r for r in importlib.metadata.requires("keras-hub") if "extra ==" not in r]
    assert any(r.startswith("tensorflow-text") for r in keras_hub_own)  # what the script exists for
    for requirement in keras_hub_own:
        assert (requirement in command) != install_jax.name_of(requirement).startswith("tensorflow"), requirement
    assert command[-1] == "jax[cuda12]>=0.10"


def test_step_one_installs_keras_hub_at_setup_cfgs_version_without_dependencies():
    keras_hub = next(r for r in setup_cfg("options", "install_requires") if r.startswith("keras-hub"))
    assert install_jax.step_one(install_jax.setup_cfg_requirements()) == [
        "install", "--no-deps", "-e", str(ROOT), keras_hub]


def test_print_shows_the_commands_and_installs_nothing():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "install_jax.py"), "--print"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, second = [line for line in done.stdout.splitlines() if line.startswith("+ ")][:2]
    assert "--no-deps" in first and "keras-hub" in first
    assert "tensorflow" not in second
