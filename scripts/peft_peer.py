#!/usr/bin/env python
"""Training-throughput peer: HF transformers T5 + PEFT LoRA (peer of the Keras/keras-hub framework).

Random-weight T5 built from T5Config (no hub access), LoRA on q,v, Adam lr 1e-3,
random token data, 1 warm-up epoch + 1 timed epoch. Prints one JSON line (prefixed RESULT)
per batch size.

  python peft_peer.py --rank 4 --batch 64 [--compile] [--matmul-peak]
  python peft_peer.py --device cuda --bf16 --batch 8 64 128 --vocab 32128 --d-model 512 ...

Copied from ../shared/bench/peft_peer.py (CPU only) and extended for `scripts/gpu_check.py`:
`--device cuda` (the model and data on the GPU, the clock read after `torch.cuda.synchronize()`,
`peak_memory_mb` = `torch.cuda.max_memory_allocated`, reset per batch size), `--bf16`
(`torch.autocast(dtype=torch.bfloat16)`, PyTorch's mixed precision: weights and Adam in float32),
and several `--batch` values in one process (the model and its LoRA weights reset between them).
"""
import argparse
import json
import resource
import time

import numpy as np
import torch


def matmul_peak(n=2048, reps=10):
    """Best-of-reps GFLOP/s of a float32 n x n matmul (numpy and torch)."""
    out = {}
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    a @ b
    best = min(_timeit(lambda: a @ b) for _ in range(reps))
    out["numpy_f32_matmul_gflops"] = 2 * n**3 / best / 1e9
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ta @ tb
    best = min(_timeit(lambda: ta @ tb) for _ in range(reps))
    out["torch_f32_matmul_gflops"] = 2 * n**3 / best / 1e9
    return out


def _timeit(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def flop_estimate(model, cfg, enc_len, dec_len):
    """Approximate training FLOPs per example for a LoRA run (frozen base).

    Matmul params are counted per role (which tokens they act on):
      enc blocks (q,k,v,o,wi_*,wo)        -> enc_len tokens
      dec self-attn + cross q,o + FF       -> dec_len tokens
      dec cross-attn k,v                   -> enc_len tokens (encoder outputs)
      lm_head                              -> dec_len tokens
    forward = 2*P*tokens + attention score/value matmuls; backward ~= forward
    (activation grads only; frozen weights need no weight grads; LoRA's own
    weight grads are negligible and ignored). Train = 2 * forward.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    enc_p = dec_tok_p = dec_kv_p = 0
    for name, mod in base.named_modules():
        if not isinstance(mod, torch.nn.Linear) or "lora_" in name:
            continue
        w = mod.weight.numel()
        if name.startswith("encoder."):
            enc_p += w
        elif name.startswith("decoder."):
            if ".EncDecAttention." in name and (name.endswith(".k") or name.endswith(".v")
                                                or name.endswith(".k.base_layer") or name.endswith(".v.base_layer")):
                dec_kv_p += w
            else:
                dec_tok_p += w
    head_p = base.lm_head.weight.numel()
    inner = cfg.num_heads * cfg.d_kv
    # attention: QK^T and AV, 2 matmuls * 2 flops * Lq*Lk*inner per layer
    attn = 4 * inner * (cfg.num_layers * enc_len * enc_len
                        + cfg.num_decoder_layers * (dec_len * dec_len + dec_len * enc_len))
    fwd = 2 * (enc_p * enc_len + dec_tok_p * dec_len + dec_kv_p * enc_len + head_p * dec_len) + attn
    return {
        "P_enc_blocks": enc_p, "P_dec_blocks": dec_tok_p + dec_kv_p, "P_lm_head": head_p,
        "P_matmul": enc_p + dec_tok_p + dec_kv_p + head_p,
        "fwd_flops_per_example": fwd, "train_flops_per_example": 2 * fwd,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--batch", type=int, nargs="+", default=[64])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (mixed precision)")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--enc-len", type=int, default=32)
    ap.add_argument("--dec-len", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--d-kv", type=int, default=64)
    ap.add_argument("--d-ff", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dec-layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="torch.compile the PEFT model")
    ap.add_argument("--matmul-peak", action="store_true", help="also measure 2048^2 f32 matmul GFLOP/s")
    ap.add_argument("--tied", action="store_true",
                    help="keep transformers-5 default: T5Config forces tie_word_embeddings=True, so lm_head IS the "
                         "input embedding; default here unties it (separate lm_head, as in FLAN-T5 checkpoints)")
    args = ap.parse_args()

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    from transformers import T5Config, T5ForConditionalGeneration
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = T5Config(vocab_size=args.vocab, d_model=args.d_model, d_kv=args.d_kv, d_ff=args.d_ff,
                   num_layers=args.layers, num_decoder_layers=args.dec_layers, num_heads=args.heads,
                   feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                   dropout_rate=args.dropout, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(cfg)
    if not args.tied and model.lm_head.weight is model.shared.weight:
        # transformers 5.x ignores tie_word_embeddings=False for T5 (it only turns off output scaling);
        # give lm_head its own weight so the graph matches FLAN-T5 (untied head).
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
        getattr(model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)
    total_params = sum(p.numel() for p in model.parameters())
    lcfg = LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=["q", "v"],
                      lora_dropout=0.0, task_type=TaskType.SEQ_2_SEQ_LM)
    model = get_peft_model(model, lcfg).to(device)
    initial_state = {name: value.detach().clone() for name, value in model.state_dict().items() if "lora_" in name}
    base = model.get_base_model()
    lm_head_tied = base.lm_head.weight is base.shared.weight
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_with_lora = sum(p.numel() for p in model.parameters())
    flops = flop_estimate(model, cfg, args.enc_len, args.dec_len)
    model.train()

    g = torch.Generator().manual_seed(args.seed)
    x = torch.randint(2, args.vocab, (args.n, args.enc_len), generator=g).to(device)
    y = torch.randint(2, args.vocab, (args.n, args.dec_len), generator=g).to(device)
    mask = torch.ones_like(x)
    for batch in args.batch:
        model.load_state_dict(initial_state, strict=False)  # each batch size starts from the same adapter
        run_batch(args, model, cfg, x, y, mask, batch, device, g, lm_head_tied, trainable, total_with_lora,
                  total_params, flops)


def run_batch(args, model, cfg, x, y, mask, batch, device, g, lm_head_tied, trainable, total_with_lora,
              total_params, flops):
    """Warm-up epoch then timed epoch at `batch`; prints its RESULT line."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    fwd = model
    compile_s = None
    if args.compile:
        fwd = torch.compile(model)

    def step(xb, mb, yb):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = fwd(input_ids=xb, attention_mask=mb, labels=yb)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    def epoch():
        perm = torch.randperm(args.n, generator=g).to(device)
        loss = None
        for i in range(0, args.n, batch):
            idx = perm[i:i + batch]
            loss = step(x[idx], mask[idx], y[idx])
        return float(loss.detach())  # waits for the device's queued work

    t0 = time.perf_counter()
    if args.compile:  # time the first (compiling) step separately
        idx = torch.arange(batch, device=device)
        step(x[idx], mask[idx], y[idx])
        compile_s = time.perf_counter() - t0
    warm_loss = epoch()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss = epoch()
    secs = time.perf_counter() - t0
    steps = -(-args.n // batch)
    tokens = args.n * (args.enc_len + args.dec_len)
    res = {
        "rank": args.rank, "batch": batch, "device": args.device, "bf16": args.bf16, "compile": args.compile, "lm_head_tied": lm_head_tied, "threads": args.threads,
        "trainable_params": trainable, "total_params": total_with_lora, "base_params": total_params,
        "warmup_epoch_s": round(warm_s, 3), "compile_first_step_s": compile_s and round(compile_s, 3),
        "epoch_s": round(secs, 3), "steps": steps, "ms_per_step": round(1000 * secs / steps, 2),
        "tokens_per_s": round(tokens / secs, 1),
        "achieved_gflops": round(flops["train_flops_per_example"] * args.n / secs / 1e9, 2),
        "loss_warm": round(warm_loss, 4), "loss": round(loss, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None,
        **flops,
    }
    if args.matmul_peak:
        res.update({k: round(v, 1) for k, v in matmul_peak().items()})
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
