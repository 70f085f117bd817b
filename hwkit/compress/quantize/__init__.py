"""Quantise a float PyTorch model into an FPGA-ready Brevitas model with Brevitas's graph-mode tools.

``recipe`` (the quantisation map and the deterministic float -> quantised rebuild), ``ptq``
(calibration, GPTQ, bias correction, QAT with distillation), ``run`` (checkpoint, reports, the
``quantize`` pass) and ``cli`` (``hwkit quantize``). See docs/quantize.md.
"""
