"""Build the offline demo base (a small multilingual T5 and its tokenizer) that the package ships.

    python scripts/build_demo_base.py                 # rebuild lora_keras/models/demo/preset
    python scripts/build_demo_base.py --out /tmp/base # build elsewhere (the slow test does this)

Deterministic: the corpora are generated from fixed seeds, the tokenizer is trained single-threaded
and TensorFlow's op determinism is on, so a rebuild on the same machine and versions gives the same
vocabulary and weights (metadata.json's save date and the recorded build time differ). It takes about 30 minutes on 2 CPU cores (1,842 s for the shipped one); the preset's
lora_keras_task.json records the time and the base's quality per language (loss per real token,
token accuracy, greedy BLEU).
"""

import os
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lora_keras.cli import OneLineErrorParser, exit_on_input_error, native_stderr_silenced  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrorParser(prog="build_demo_base.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="directory to write; default: the package's shipped preset (replaced)")
    parser.add_argument("--quiet", action="store_true", help="no training progress")
    args = parser.parse_args(argv)
    with native_stderr_silenced():
        from lora_keras.backends.devices import enable_op_determinism
    from lora_keras.models.demo import base as demo

    out = pathlib.Path(args.out) if args.out else demo.SHIPPED_PRESET
    with exit_on_input_error("build_demo_base.py", flags={"directory": "--out"}):
        if args.out and out.exists():
            from lora_keras.errors import InputError

            raise InputError(f"{out} already exists; pass a new directory", parameter="directory")
        enable_op_determinism()
        staging = out.with_name(out.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        demo.build_demo_base(demo.DemoConfig(), staging, verbose=0 if args.quiet else 2)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    task = demo.read_task(out)
    print(f"Wrote {out} in {task['build_seconds']:.0f} s")
    for language, quality in task["quality"].items():
        print(f"  {language:8s} " + " ".join(f"{k}={v}" for k, v in quality.items()))


if __name__ == "__main__":
    main()
