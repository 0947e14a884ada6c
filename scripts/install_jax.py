"""Install lora-keras for Keras's JAX backend with neither TensorFlow nor tensorflow-text.

    python3 -m venv .venv && . .venv/bin/activate
    python scripts/install_jax.py                          # JAX's CPU build
    python scripts/install_jax.py "jax[cuda12]>=0.10"      # on GPUs: JAX's CUDA build (any pip requirements may follow)
    python scripts/install_jax.py --print                  # the pip commands only; installs nothing

pip cannot leave one dependency out: `pip install -e ".[jax]"` brings the default install's
`tensorflow`, and keras-hub's own metadata requires `tensorflow-text` (which requires TensorFlow),
which pip installs whenever keras-hub is named, even when keras-hub is already installed. So, with
the pip of the Python that runs this script:

1. `pip install --no-deps -e <repo> "keras-hub<spec>"`: lora-keras and keras-hub without their
   requirements (keras-hub's spec from setup.cfg);
2. `pip install <the rest>`: setup.cfg's `install_requires` and its `jax` extra, and keras-hub's own
   requirements as installed in step 1 (markers kept, `extra == ...` ones left out), less
   tensorflow, tensorflow-text and keras-hub itself, plus any requirements given on the command line.

Both lists are read when it runs (setup.cfg, keras-hub's metadata), so they cannot drift. It then
fails if any TensorFlow distribution is installed. Afterwards `pip check` names the two left out on
purpose: lora-keras requires tensorflow, keras-hub requires tensorflow-text. Stdlib only.
"""

from __future__ import annotations

import argparse
import configparser
import importlib
import importlib.metadata
import pathlib
import re
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERAS_HUB = "keras-hub"
# left out: TensorFlow and what requires it; keras-hub is installed in step 1 without its requirements
LEFT_OUT = {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-text", "tf-keras", KERAS_HUB}


def canonical(name: str) -> str:
    """A distribution's name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def name_of(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical(match.group(1))


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def setup_cfg_requirements(extra: str = "jax") -> list[str]:
    """setup.cfg's install_requires, then its `extra` extra."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    return lines(config["options"]["install_requires"]) + lines(config["options.extras_require"][extra])


def keras_hub_requirements() -> list[str] | None:
    """keras-hub's Requires-Dist as installed (None when it is not), without the extras' ones."""
    importlib.invalidate_caches()
    try:
        requires = importlib.metadata.requires(KERAS_HUB) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return [r for r in requires if not re.search(r"""\bextra\s*==""", r)]


def step_one(ours: list[str]) -> list[str]:
    spec = [r for r in ours if name_of(r) == canonical(KERAS_HUB)]
    if not spec:
        raise SystemExit(f"setup.cfg's install_requires names no {KERAS_HUB}")
    return ["install", "--no-deps", "-e", str(ROOT)] + spec


def step_two(ours: list[str], theirs: list[str], added: list[str]) -> list[str]:
    kept = [r for r in ours + theirs if name_of(r) not in LEFT_OUT]
    return ["install"] + kept + added


def pip(args: list[str], dry: bool) -> None:
    command = [sys.executable, "-m", "pip"] + args
    print("+ " + shlex.join(command if not dry else ["pip"] + args), flush=True)
    if not dry:
        subprocess.run(command, check=True)


def tensorflow_installed() -> list[str]:
    importlib.invalidate_caches()
    names = {canonical(d.metadata["Name"]) for d in importlib.metadata.distributions()}
    return sorted(n for n in names if n in LEFT_OUT - {canonical(KERAS_HUB)} or n.startswith("tensorflow"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("requirements", nargs="*",
                        help='more pip requirements for step 2, e.g. "jax[cuda12]>=0.10" on GPUs')
    parser.add_argument("--print", dest="dry", action="store_true",
                        help="print the pip commands, install nothing")
    args = parser.parse_args(argv)

    ours = setup_cfg_requirements()
    pip(step_one(ours), args.dry)
    theirs = keras_hub_requirements()
    if theirs is None:
        if not args.dry:
            raise SystemExit(f"{KERAS_HUB} is not installed after step 1")
        theirs = [f"<{KERAS_HUB}'s own requirements, read after step 1>"]
        print("+ " + shlex.join(["pip"] + step_two(ours, [], args.requirements)) + " " + theirs[0])
    else:
        pip(step_two(ours, theirs, args.requirements), args.dry)
    if args.dry:
        return 0
    present = tensorflow_installed()
    if present:
        print(f"TensorFlow is installed in this environment: {', '.join(present)}", file=sys.stderr)
        return 1
    print("installed without TensorFlow; run with KERAS_BACKEND=jax")
    return 0


if __name__ == "__main__":
    sys.exit(main())
