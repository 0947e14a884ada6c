"""Translate with a base T5 and, optionally, a LoRA adapter from a sweep.

    python scripts/translate.py --model tiny --adapter logs/sweep/adapters/trial_6.safetensors \\
        "translate English to Dravic: the red dog saw a small cat ."
    echo "translate English to Dravic: my sister will buy seven old books ." | python scripts/translate.py

Prints one translation per input line, in order; with no TEXT it reads lines from stdin. The
input is used as given: write any task prefix yourself.
"""

import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lora_keras.cli import (  # noqa: E402
    OneLineErrorParser,
    exit_on_input_error,
    positive_int,
)
from lora_keras.runtime.gpu_probe import load_backend_quietly  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrorParser(prog="translate.py", description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="*", help="sentences to translate; default: lines of stdin")
    parser.add_argument("--model", default="tiny", help="'tiny', a keras-hub T5 preset dir, a Hugging Face "
                        "T5 checkpoint dir, or a hub id such as google/flan-t5-small")
    parser.add_argument("--adapter", help="a LoRA adapter file written by tune.py (adapters/*.safetensors)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest translation")
    parser.add_argument("--num-beams", type=positive_int, default=1, help="beam width; 1 is greedy")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="sentences decoded at once")
    args = parser.parse_args(argv)
    lines = args.text or [line.rstrip("\n") for line in sys.stdin]
    load_backend_quietly()  # TensorFlow's start-up notices and, without a GPU driver, its cuInit errors: not here
    with exit_on_input_error("translate.py"):
        from lora_keras.evaluation import translate
        from lora_keras.adapters import load_adapter
        from lora_keras.models.sources import load_base

        base = load_base(args.model, verbose=1)
        backbone = base.build_backbone()
        if args.adapter:
            load_adapter(backbone, args.adapter)
        translations = translate(
            backbone, base.tokenizer, lines, max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size, num_beams=args.num_beams,
        )
    for translation in translations:
        print(translation)


if __name__ == "__main__":
    main()
