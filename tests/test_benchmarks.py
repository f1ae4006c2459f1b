"""The benchmark scripts run and print what benchmarks/README.md quotes, on tiny settings.

No timing is asserted (speed targets live in the scripts' own output): these tests only keep
the scripts from rotting. Each runs in a subprocess, as a reader would run it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args],
                         capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_bench_ops_prints_every_row_with_an_hlo_verdict():
    text = run_script("bench_ops.py", "--repeats", "1")
    rows = [line for line in text.splitlines()
            if re.match(r"\| (conv2d|max_pool|avg_pool|blur_pool) ", line)]
    assert len(rows) == 18
    assert all(line.split("|")[-2].strip() in ("yes", "no") for line in rows)


def test_bench_train_step_checks_agreement_and_compares():
    text = run_script("bench_train_step.py", "--repeats", "2", "--rounds", "1")
    # The script exits with an error when cnnlib and raw lax disagree after one step.
    assert re.search(r"largest parameter difference \d\.\d\de[-+]\d\d", text)
    assert "cnnlib / raw lax, best rounds:" in text
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "torch is not installed" in text
    else:
        assert "goal cnnlib <= torch eager in wall time:" in text


def test_bench_train_step_profile_lists_the_pieces():
    text = run_script("bench_train_step.py", "--profile", "--repeats", "2")
    names = [line.split("|")[1].strip() for line in text.splitlines()
             if line.startswith(("| conv", "| relu"))]
    want = ["conv 1 forward", "conv 1 weight gradient", "conv 2 forward",
            "conv 2 input gradient", "conv 2 weight gradient", "relu + max pool 1"]
    assert len(names) == len(want) and all(n.startswith(w) for n, w in zip(names, want))


def test_fashion_mnist_results_trains_and_reports_one_row_per_key():
    text = run_script("fashion_mnist_results.py", "--models", "mlp", "--epochs", "1",
                      "--seeds", "0", "1")
    assert "54,000 training, 6,000 validation and 10,000 test images" in text
    rows = re.findall(r"^\| mlp \| 79,510 \| (\d) \| 1 \| 128 \| 0.006 \| 1 \| .* \| ([\d.]+) \| "
                      r"([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)
    assert [row[0] for row in rows] == ["0", "1"]
    # One epoch of an MLP; the validation split predicts the test accuracy within 0.03, with
    # and without averaging over shifts, and averaging moves neither by more than 0.03.
    for _, val, acc, val_avg, acc_avg in rows:
        val, acc, val_avg, acc_avg = map(float, (val, acc, val_avg, acc_avg))
        assert 0.8 < acc < 0.9 and abs(val - acc) < 0.03 and abs(val_avg - acc_avg) < 0.03
        assert abs(acc_avg - acc) < 0.03
    mean = re.search(r"mlp: val acc ([\d.]+) ± ([\d.]+), test acc ([\d.]+) ± ([\d.]+) "
                     r"\(min ([\d.]+)\); 9 shifts: val acc [\d.]+ ± [\d.]+, test acc ([\d.]+) ± "
                     r"[\d.]+ \(min ([\d.]+)\)", text)
    accs = [float(row[2]) for row in rows]
    assert abs(float(mean[3]) - sum(accs) / 2) < 1e-4 and float(mean[5]) == min(accs)
    averaged = [float(row[4]) for row in rows]
    assert abs(float(mean[6]) - sum(averaged) / 2) < 1e-4 and float(mean[7]) == min(averaged)


def test_fashion_mnist_results_trains_the_record_network_on_two_devices_without_a_split():
    text = run_script("fashion_mnist_results.py", "--models", "vgg-bn", "--epochs", "1",
                      "--seeds", "0", "--train-examples", "2048", "--test-examples", "2000",
                      "--all-train")
    # --all-train (a chosen recipe's final run) keeps no validation split: its columns are empty.
    assert "2,048 training, 0 validation and 2,000 test images" in text
    row = re.search(r"^\| vgg-bn \| 75,082 \| 0 \| 1 \| 64 \| 0.006 \| 2 \| .* \| ([\d.]+) \| "
                    r"— \| ([\d.]+) \| — \| ([\d.]+) \|$", text, re.M)
    # 32 steps from scratch on 2,048 images, each batch split over two CPU devices: well above
    # chance (0.1) on the test set, which needs the BatchNorm running statistics to have been
    # carried through fit.
    assert row and all(float(acc) > 0.4 for acc in row.groups()), text
    assert re.search(r"vgg-bn: test acc [\d.]+ ± 0.0000 \(min [\d.]+\); 9 shifts: test acc", text)


def test_bench_resnet_step_checks_agreement_and_compares():
    text = run_script("bench_resnet_step.py", "--repeats", "2", "--rounds", "1")
    # The script exits with an error when cnnlib and raw lax disagree after one step.
    assert re.search(r"largest parameter or state difference \d\.\d\de[-+]\d\d", text)
    assert re.search(r"cnnlib / raw lax, best rounds: \d\.\d{3} .* goal <= 1\.05: (met|NOT met)",
                     text)


def test_bench_multiprocess_runs_two_processes_that_agree():
    text = run_script("bench_multiprocess.py", "--examples", "1024", "--epochs", "1",
                      "--timeout", "300")
    # The script exits with an error when the processes disagree or the losses differ.
    rows = re.findall(r"^\|\s+(\d) \|\s+(\d) \|", text, re.M)
    assert rows == [("1", "1"), ("2", "2")]
    assert "identical in every process: yes" in text


def test_bench_eval_batch_times_every_batch_size_with_one_result():
    text = run_script("bench_eval_batch.py", "--examples", "300", "--rounds", "1",
                      "--batch-sizes", "100", "300", "1000", "--models", "cnn", "mlp")
    # The script exits with an error when two batch sizes give different results.
    rows = re.findall(r"^(cnn|mlp) +([\d,]+) +([\d,]+) +([\d,]+) +([\d.]+)x \(batch (\d+)\)$",
                      text, re.M)
    assert [row[0] for row in rows] == ["cnn", "mlp"], text
    assert all(int(row[5]) in (100, 300, 1000) for row in rows)
    assert "every batch size gave the same accuracy and loss" in text


def test_bench_init_compiles_both_draws_with_the_same_weights():
    text = run_script("bench_init.py", "--rounds", "1", "--models", "cnn", "mlp")
    # The script exits with an error when the two draws give different weights.
    rows = re.findall(r"^(cnn|mlp) +(\d+) +([\d,]+) +([\d.]+) +([\d.]+) +([\d.]+)x$", text, re.M)
    assert [row[0] for row in rows] == ["cnn", "mlp"], text
    assert rows[1][1:3] == ("4", "79,510")  # models.mlp((100,)): two Dense layers
    assert "the same weights, bit for bit" in text


@pytest.mark.parametrize("script, args, message", [
    ("bench_eval_batch.py", ["--batch-sizes", "250", "0"], "--batch-sizes: must be >= 1; got 0"),
    ("bench_init.py", ["--rounds", "0"], "--rounds: must be >= 1; got 0"),
    ("bench_ops.py", ["--repeats", "0"], "--repeats: must be >= 1; got 0"),
    ("bench_train_step.py", ["--rounds", "-1"], "--rounds: must be >= 1; got -1"),
    ("bench_resnet_step.py", ["--repeats", "0"], "--repeats: must be >= 1; got 0"),
    ("bench_multiprocess.py", ["--batch-size", "0"], "--batch-size: must be >= 1; got 0"),
    ("fashion_mnist_results.py", ["--seeds", "0", "-1"], "--seeds: must be >= 0; got -1"),
    ("fashion_mnist_results.py", ["--epochs", "0"], "--epochs: must be >= 1; got 0"),
    ("fashion_mnist_results.py", ["--devices", "0"], "--devices: must be >= 1; got 0"),
    ("fashion_mnist_results.py", ["--train-examples", "0"],
     "--train-examples: must be >= 1; got 0"),
    ("fashion_mnist_results.py", ["--test-examples", "-5"],
     "--test-examples: must be >= 1; got -5"),
])
def test_scripts_reject_bad_counts_naming_the_option(script, args, message):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
