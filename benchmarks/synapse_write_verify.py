"""Deployment on the analog boards: open-loop programming vs closed-loop write-verify (scikit-learn digits).

    .venv/bin/python benchmarks/synapse_write_verify.py [--instances 10] [--tolerance 0.02] [--rounds 20]

A float 64-32-10 ReLU MLP (SGD, 30 epochs, batch 8, lr 0.1, pixels / 16, 75/25 split seed 0) is programmed onto
each shipped analog board's device (preset + the board's [analog.device_overrides], the board's crossbar and
ADC/DAC bits) over N device instances, once open loop and once with write-verify. Prints accuracy (mean, std,
min), the rms weight error after programming (noiseless read, in units of each layer's beta), programming pulses
and verify reads per instance, pairs left outside the tolerance, and the pulse ratio write-verify / open-loop,
all measured in this run. One thread.
"""

from __future__ import annotations

import argparse
import time

import torch

from hwkit.backends.analog import _crossbar, analog_config
from hwkit.board import load_board
from hwkit.compress.synapse.device import WriteVerify
from hwkit.compress.synapse.train import accuracy, build_mlp, digits_split, evaluate_instances, train_float

BOARDS = ("rram-taox-128", "rram-agsi-128", "pcm-gst-256")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits_split(0)
    torch.manual_seed(0)
    model = train_float(build_mlp([64, 32, 10]), xtr, ytr, epochs=30)
    sw = accuracy(model, xte, yte)
    wv = WriteVerify(tolerance=args.tolerance, max_iterations=args.rounds)
    print(f"software accuracy {sw:.4f}; write-verify tolerance {wv.tolerance:g} beta, <= {wv.max_iterations} rounds; "
          f"{args.instances} instances per row")
    print("| board | device | programming | accuracy mean | std | min | weight rms err | pulses/instance "
          "| verify reads | unconverged pairs | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in BOARDS:
        cfg = analog_config(load_board(name))
        dev, xbar = cfg["device"], _crossbar(cfg)
        pulses = {}
        for mode in ("open-loop", "write-verify"):
            t0 = time.perf_counter()
            r = evaluate_instances(model, dev, xbar, xte, yte, args.instances, program=mode,
                                   verify=wv if mode == "write-verify" else None)
            p = r["programming"]
            pulses[mode] = p["pulses"]
            print(f"| {name} | {dev.name} | {mode} | {r['mean']:.4f} | {r['std']:.4f} | {r['min']:.4f} | "
                  f"{r['weight_rms_error']:.4f} | {p['pulses']:,.0f} | {p['reads']:,.0f} | "
                  f"{p['unconverged']:,.0f} of {p['pairs']:,.0f} | {time.perf_counter() - t0:.1f} |")
        print(f"| {name} | | pulses write-verify / open-loop | {pulses['write-verify'] / pulses['open-loop']:.2f}x "
              "| | | | | | | |")


if __name__ == "__main__":
    main()
