"""`hwkit compile MODEL_DIR --target cpu` for Hugging Face encoders (small BertConfig model, no download): the
directories `hwkit prune` and `hwkit shiftadd` write go through ONNX export with integer token inputs and masks,
ONNX Runtime, and the golden-batch verification."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers", reason="transformers is a dev dependency (requirements-dev.txt)")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from hwkit.cli import main  # noqa: E402
from hwkit.export import hf  # noqa: E402
from hwkit.load import load_hf_dir  # noqa: E402
from tests.unit import tiny_bert  # noqa: E402


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hfc")
    src = tiny_bert.save_dir(root / "tiny")
    calib = root / "calib.txt"
    calib.write_text("\n".join(tiny_bert.sentences(80)) + "\n")
    assert main(["prune", str(src), "--calib", str(calib), "--delta-e-rel", "0.5", "--batch-size", "16",
                 "--out", str(root / "pruned"), "--quiet"]) == 0
    assert main(["shiftadd", str(src), "--mode", "bcq", "--rounds", "2", "--calib", str(calib),
                 "--out", str(root / "bcq"), "--quiet"]) == 0
    yield {"src": src, "pruned": root / "pruned", "bcq": root / "bcq", "root": root}
    torch.set_num_threads(threads)


def _compile(model, out, *extra):
    return main(["compile", str(model), "--target", "cpu", "--out", str(out), "--to", "ort.verify", "--quiet",
                 *extra])


def test_pruned_hf_dir_compiles_for_cpu_with_token_inputs(dirs):
    out = dirs["root"] / "build-pruned"
    assert _compile(dirs["pruned"], out, "--input-shape", "1,24") == 0
    rep = json.loads((out / "report.json").read_text())
    rows = rep["verification"]
    assert [r["ok"] for r in rows] == [True, True] and rows[1]["samples"] == 256
    assert rows[0]["max_abs_err"] < 1e-4
    graph = onnx.load(str(next(out.rglob("model.onnx"))))
    ins = {i.name: i.type.tensor_type.elem_type for i in graph.graph.input}
    assert ins == {n: onnx.TensorProto.INT64 for n in ("input_ids", "attention_mask", "token_type_ids")}
    widths = [b["width_after"] for b in json.loads((dirs["pruned"] / "prune_report.json").read_text())["blocks"]]
    assert min(widths) < 64
    shapes = {tuple(t.dims) for t in graph.graph.initializer}
    assert all((32, w) in shapes or (w, 32) in shapes for w in widths)  # the pruned widths are in the graph
    # the golden batch has padded samples (masks with zeros); ORT on it equals the pruned PyTorch model
    golden = dict(np.load(next(out.rglob("golden_in.npz"))))
    assert golden["input_ids"].dtype == np.int64 and golden["input_ids"].shape[1] == 24
    assert (golden["attention_mask"] == 0).any() and (golden["attention_mask"][0] == 1).all()
    sess = ort.InferenceSession(str(next(out.rglob("model.onnx"))))
    got = sess.run(None, golden)[0]
    ref = hf.run_torch(load_hf_dir(dirs["pruned"]).module, tuple(golden), golden)
    mask = golden["attention_mask"].astype(bool)
    assert np.abs(got - ref)[mask].max() < 1e-4


def test_shiftadd_bcq_hf_dir_compiles_for_cpu(dirs):
    out = dirs["root"] / "build-bcq"
    assert _compile(dirs["bcq"], out) == 0
    rep = json.loads((out / "report.json").read_text())
    assert all(r["ok"] for r in rep["verification"])
    assert rep["model"]["input_shape"] == [1, 32] and rep["model"]["input_names"][0] == "input_ids"


def test_token_model_input_shape_and_int8_are_one_line_errors(dirs, capsys):
    assert _compile(dirs["src"], dirs["root"] / "bad-shape", "--input-shape", "1,999") == 2
    assert "positions" in capsys.readouterr().err
    assert main(["compile", str(dirs["src"]), "--target", "cpu", "--flow", "ort-cpu-int8", "--out",
                 str(dirs["root"] / "int8"), "--quiet"]) == 3
    assert "token models" in capsys.readouterr().err


def test_hf_dir_to_fpga_or_quantize_is_unsupported_not_missing(dirs, capsys):
    """A Hugging Face directory once reached FINN's export and `hwkit quantize` as "model file not found" (exit 2)."""
    assert main(["compile", str(dirs["src"]), "--target", "zcu104", "--out", str(dirs["root"] / "fpga"),
                 "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "Hugging Face" in err and "--target cpu" in err and "not found" not in err
    assert main(["quantize", str(dirs["src"]), "--calib", "digits", "--out", str(dirs["root"] / "q" / "q.pt"),
                 "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "Hugging Face" in err and "not found" not in err
    assert not (dirs["root"] / "q").exists()
