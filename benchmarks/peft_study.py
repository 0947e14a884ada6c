#!/usr/bin/env python
"""The peer study: the default rank x batch grid trained with transformers + PEFT on PyTorch.

Each trial: the exported demo base (`scripts/export.py --model tiny`) loaded afresh, PEFT LoRA on
`q`,`v` with alpha = rank and no LoRA dropout, Adam (epsilon 1e-7, Keras's) at the learning rate,
the training pairs reshuffled each epoch, batches padded to their longest source and target, and
after each epoch the whole validation set scored as the mean NLL per real target token. Eager
PyTorch with its default threads. The pairs come as token ids (`--tokens`, written by
`benchmarks/study_vs_peer.py` with lora-keras's tokenization), so both sides train on the same ids.

    python benchmarks/peft_study.py --model HF_DIR --tokens tokens.npz [--ranks 1 4 16] \\
        [--batch-sizes 8 64 128] [--epochs 2] [--learning-rate 3e-3]

Prints one `TRIAL {json}` line per trial and a last `STUDY {json}` line with the wall time.
"""

import argparse
import json
import time

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import T5ForConditionalGeneration  # noqa: E402

PAD_ID = 0


def batches(source, target, order, batch_size):
    """(input_ids, attention_mask, labels) per batch of `order`, cut to the batch's longest source and target."""
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        src, tgt = source[rows], target[rows]
        src = src[:, : int((src != PAD_ID).sum(1).max())]
        tgt = tgt[:, : int((tgt != PAD_ID).sum(1).max())]
        labels = torch.from_numpy(tgt.astype(np.int64))
        labels[labels == PAD_ID] = -100
        yield torch.from_numpy(src.astype(np.int64)), torch.from_numpy((src != PAD_ID).astype(np.int64)), labels


def val_loss(model, source, target):
    """Mean NLL per real target token over the whole set (batches of 64)."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for ids, mask, labels in batches(source, target, np.arange(len(source)), 64):
            logits = model(input_ids=ids, attention_mask=mask, labels=labels).logits
            nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum",
                                                    ignore_index=-100)
            total += float(nll)
            count += int((labels != -100).sum())
    model.train()
    return total / count


def trial(args, tokens, rank, batch_size, seed):
    """One training: fresh base, PEFT LoRA at `rank`, `args.epochs` epochs; its figures."""
    started = time.perf_counter()
    base = T5ForConditionalGeneration.from_pretrained(args.model)
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=["q", "v"]))
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate,
                                 eps=1e-7)
    generator = np.random.default_rng(seed)
    setup_s = time.perf_counter() - started
    fit_started = time.perf_counter()
    losses = []
    for _ in range(args.epochs):
        order = generator.permutation(len(tokens["train_source"]))
        for ids, mask, labels in batches(tokens["train_source"], tokens["train_target"], order, batch_size):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(val_loss(model, tokens["val_source"], tokens["val_target"]))
    return {"rank": rank, "batch_size": batch_size, "training_time_s": time.perf_counter() - fit_started,
            "setup_s": setup_s, "val_loss": losses[-1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Hugging Face T5 checkpoint dir (scripts/export.py)")
    parser.add_argument("--tokens", required=True, help="npz with train_source, train_target, val_source, val_target")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64, 128])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    tokens = dict(np.load(args.tokens))
    rows = []
    for rank in args.ranks:
        for batch_size in args.batch_sizes:
            row = trial(args, tokens, rank, batch_size, args.seed)
            rows.append(row)
            print("TRIAL " + json.dumps(row), flush=True)
    wall = time.perf_counter() - STARTED
    print("STUDY " + json.dumps({"wall_time_s": wall, "training_time_s": sum(r["training_time_s"] for r in rows),
                                 "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
