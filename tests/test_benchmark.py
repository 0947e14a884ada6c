"""The benchmark counts FLOPs as the peer does, and `scripts/bench.py` runs and reports on a tiny setting."""

import subprocess
import sys
import tempfile
import time

import psutil
import pytest
from conftest import ROOT, run_main

from lora_keras.runtime.benchmark import (
    matmul_ceiling,
    mean_lengths,
    reference_backbone_config,
    reference_tokens,
    training_flops_per_example,
    training_matmuls,
)

# The peer's flop_estimate (../shared/bench/peft_peer.py) for its default config,
# by hand: projections 2,621,440 (encoder) + 3,145,728 (decoder, on target tokens)
# + 524,288 (cross-attention k, v on source tokens) + 2,048,000 (head) acting on
# 32 tokens each, plus 12,582,912 of attention products; training is 2 x forward.
PEER_TRAIN_FLOPS_PER_EXAMPLE = 2 * (2 * 32 * (2_621_440 + 3_145_728 + 524_288 + 2_048_000) + 12_582_912)


def test_flops_match_the_peers_count():
    assert training_flops_per_example(reference_backbone_config(), 32, 32) == PEER_TRAIN_FLOPS_PER_EXAMPLE


def test_matmul_shapes_add_up_to_the_flop_count():
    gated = reference_backbone_config()
    plain = dict(gated, use_gated_activation=False, key_value_dim=None, num_heads=8, hidden_dim=64)
    for config, batch, source, target in ((gated, 64, 32, 32), (plain, 3, 7, 5)):
        matmuls = training_matmuls(config, batch, source, target)
        flops = sum(count * 2 * b * m * k * n for (b, m, k, n), count in matmuls.items())
        assert flops == training_flops_per_example(config, source, target) * batch
    # the head's forward and input-gradient products, on 64 x 32 target tokens
    assert matmuls_of(gated)[(1, 2048, 256, 8000)] == 1 and matmuls_of(gated)[(1, 2048, 8000, 256)] == 1


def matmuls_of(config):
    return training_matmuls(config, 64, 32, 32)


def test_matmul_ceiling_times_every_shape():
    config = dict(reference_backbone_config(), vocabulary_size=100, hidden_dim=16, intermediate_dim=32,
                  key_value_dim=8, num_heads=2, num_layers=1)
    ceiling = matmul_ceiling(config, 4, 6.2, 5.0, repeats=1)
    assert ceiling.flops == training_flops_per_example(config, 6, 5) * 4
    assert 0 < ceiling.attention_seconds < ceiling.seconds and ceiling.gflops > 0


def test_reference_tokens_have_no_padding():
    tokens = reference_tokens(16, 5, 7, vocabulary_size=50)
    assert mean_lengths(tokens) == (5.0, 7.0)
    assert tokens.source_ids.min() >= 2 and tokens.target_ids.max() < 50


TINY_SHAPE = ["vocabulary_size=100", "num_layers=1", "num_heads=2", "hidden_dim=16", "intermediate_dim=32",
              "key_value_dim=8"]
FAKE_PEER = '''
import json, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
print("peer log line")
print("RESULT " + json.dumps({"tokens_per_s": 100.0, "achieved_gflops": 1.0, "warmup_epoch_s": 3.0,
                              "epoch_s": 1.0, "peak_rss_mib": 50.0, "batch": int(args["--batch"])}))
'''


def run_watching_rss(command):
    """Run `command`, sampling its RSS from outside every 20 ms: `(stdout, stderr, exit status, largest RSS in MiB)`."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=ROOT)
        watched, largest = psutil.Process(process.pid), 0
        try:
            while process.poll() is None:
                try:
                    largest = max(largest, watched.memory_info().rss)
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.02)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        out.seek(0)
        err.seek(0)
        return out.read(), err.read(), process.returncode, largest / 2**20


@pytest.mark.e2e
def test_bench_script_runs_and_compares_with_a_peer(tmp_path):
    peer = tmp_path / "peer.py"
    peer.write_text(FAKE_PEER)
    command = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--preset", "reference", "--shape", *TINY_SHAPE,
               "--examples", "16", "--batch-size", "4", "--rank", "2",
               "--vs-peer", "--peer-python", sys.executable, "--peer-script", str(peer)]
    stdout, stderr, code, seen_rss_mb = run_watching_rss(command)
    assert code == 0, stderr[-3000:]
    lines = stdout.strip().splitlines()
    fields = dict(item.split("=") for item in lines[-1].split())
    assert list(fields) == ["tokens_per_s", "mfu", "overhead_s", "peak_memory_mb"]
    assert float(fields["tokens_per_s"]) > 0 and 0 < float(fields["mfu"]) < 1
    assert float(fields["overhead_s"]) > 0
    # The bench process's peak against its RSS sampled from outside every 20 ms: the same, in MiB,
    # give or take a spike between samples (the test runner's own size once leaked in: 1720 vs 984).
    print(f"\nbench peak {fields['peak_memory_mb']} MiB; its RSS seen from outside up to {seen_rss_mb:.0f} MiB")
    assert 0.8 * seen_rss_mb < float(fields["peak_memory_mb"]) <= 1.2 * seen_rss_mb
    ratio = next(line for line in lines if line.startswith("ratio"))
    speedup = float(ratio.split("tokens/s ")[1].split("x")[0])
    assert abs(speedup - float(fields["tokens_per_s"]) / 100.0) < 0.01 * speedup
    assert any(line.startswith("| peer (transformers + PEFT) | 100 |") for line in lines)
    ceiling = next(line for line in lines if line.startswith("matmul ceiling:"))
    assert "MFU" in ceiling and "our step takes" in ceiling


def test_bench_script_rejects_bad_input(tmp_path):
    code, _, stderr = run_main("bench.py", "--vs-peer", "--peer-script", tmp_path / "none.py")
    assert code == 2
    assert stderr.count("\n") == 1 and "peft_peer.py" in stderr
    code, _, stderr = run_main("bench.py", "--shape", "layers=3")
    assert code == 2
    assert stderr.count("\n") == 1 and "num_layers" in stderr
