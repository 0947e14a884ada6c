"""Merge a LoRA adapter into its base T5 and export it: Hugging Face checkpoint or keras-hub preset.

    python scripts/export.py --model path/to/flan-t5-small \\
        --adapter logs/sweep/adapters/trial_3.safetensors --out flan-t5-small-dravic
    python scripts/export.py --model tiny --format keras-hub --out tiny-preset

The Hugging Face format (config.json, model.safetensors, spiece.model, tokenizer.json) loads
with transformers' T5ForConditionalGeneration and AutoTokenizer; the keras-hub format with
keras_hub.models.T5Seq2SeqLM.from_preset or --model of tune.py and translate.py.
"""

import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lora_keras.cli import (  # noqa: E402
    OneLineErrorParser,
    exit_on_input_error,
)
from lora_keras.runtime.gpu_probe import load_backend_quietly  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrorParser(prog="export.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny', a keras-hub T5 preset dir, a Hugging Face "
                        "T5 checkpoint dir, or a hub id such as google/flan-t5-small")
    parser.add_argument("--adapter", help="a LoRA adapter file written by tune.py; default: the base alone")
    parser.add_argument("--out", required=True, help="new directory to write")
    parser.add_argument("--format", choices=("hf", "keras-hub"), default="hf",
                        help="hf: Hugging Face checkpoint (default); keras-hub: keras-hub preset")
    args = parser.parse_args(argv)
    load_backend_quietly()  # TensorFlow's start-up notices and, without a GPU driver, its cuInit errors: not here
    with exit_on_input_error("export.py", flags={"directory": "--out"}):
        from lora_keras.models.export import export
        from lora_keras.models.sources import load_base

        base = load_base(args.model, verbose=1)
        directory = export(base, args.out, adapter=args.adapter, format=args.format)
    print(f"Wrote {directory} ({args.format})")


if __name__ == "__main__":
    main()
