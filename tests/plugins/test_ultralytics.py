"""YOLOv8 and YOLO11 from the ultralytics package (plugins/models_ultralytics.py): an exact rewrite of the
blocks that split tensors at run time, ultralytics' own suppression, a real FLOPs cut with the head's
outputs kept, a search on coco_folder data and an ONNX export checked by onnxruntime."""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import subprocess
import sys

import pytest
import torch
from conftest import write_study_file
from PIL import Image, ImageDraw

import autoprune
from autoprune import cli

# Not importorskip: importing ultralytics at collection would replace PIL.Image.open for every test.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="ultralytics not installed")

MODELS = ["ultralytics/yolov8n", "ultralytics/yolo11n"]


@pytest.fixture(autouse=True, scope="module")
def ultralytics_imported_by_the_plugin():
    """ultralytics imported first by the plugin, which keeps PIL.Image.open, before a test imports its modules."""
    autoprune.create_model("ultralytics/yolov8n", num_classes=3, image_size=64)


def _calibrated(model, images):
    """``model`` with BatchNorm statistics from ``images``: an untrained YOLO's features vanish otherwise."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = 1.0
    model.net.train()
    with torch.no_grad():
        model.net(model._letterboxed(images)[0])
    return model.eval()


def _images(count=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 48, 64, generator=generator) for _ in range(count)]


@pytest.mark.parametrize("name", MODELS)
def test_the_blocks_that_split_a_convolution_s_output_are_rewritten_exactly(name):
    from ultralytics.nn.modules import block

    from autoprune_plugins import models_ultralytics

    torch.manual_seed(0)
    model = _calibrated(autoprune.create_model(name, num_classes=3, image_size=64), _images())
    kinds = {type(m) for m in model.modules()}
    assert not kinds & {block.C2f, block.C3k2, block.C2PSA} and models_ultralytics.TwoHalves in kinds
    rewritten = [m for m in model.modules() if isinstance(m, models_ultralytics.TwoHalves)]
    for halves in rewritten:  # the original block's convolution, back from its two halves
        assert halves.cv0.conv.out_channels == halves.cv1.conv.out_channels

    family = name.split("/")[1][:-1]
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    config = yaml_model_load(f"{family}n.yaml")
    config["nc"] = 2
    torch.manual_seed(0)
    original = DetectionModel(config, ch=3, nc=2, verbose=False)
    original.load_state_dict(_unsplit(model.net.state_dict(), original))
    original.eval()
    x = model._letterboxed(_images(2, seed=1))[0]
    with torch.no_grad():
        want, got = original(x)[0], model.net(x)[0]
    assert want.shape == got.shape and torch.allclose(want, got, atol=1e-4, rtol=1e-4)


def _unsplit(state: dict, original: torch.nn.Module) -> dict:
    """The rewritten network's weights as the original network names them: each ``cv0``/``cv1`` pair joined."""
    joined = {}
    for key, value in state.items():
        twin = key.replace(".cv1.", ".cv0.", 1)
        if ".cv0." not in key:
            joined[key] = torch.cat([state[twin], value]) if twin in state and twin != key and value.dim() else value
    assert set(joined) == set(original.state_dict())
    return joined


def test_suppression_gives_what_ultralytics_non_max_suppression_gives():
    from ultralytics.utils.nms import non_max_suppression

    torch.manual_seed(0)
    model = _calibrated(autoprune.create_model("ultralytics/yolov8n", num_classes=3, image_size=64), _images())
    x, _ = model._letterboxed(_images(2, seed=2))
    with torch.no_grad():
        predictions = model.net(x)[0]
    wanted = non_max_suppression(predictions, model.score_thresh, model.iou_thresh, multi_label=True, nc=2)
    found = 0
    for prediction, want in zip(predictions, wanted, strict=True):
        boxes, scores, labels = model._suppressed(prediction)
        rows = torch.cat([boxes, scores[:, None], labels[:, None].float()], 1)
        assert sorted(rows.tolist()) == sorted(want.tolist())  # equal scores may come in another order
        assert torch.equal(scores, scores.sort(descending=True).values)
        found += len(scores)
    assert found > 0


@pytest.mark.parametrize("name", MODELS)
def test_rate_0_3_cuts_the_flops_at_least_1_5x_and_keeps_the_head_s_outputs(name):
    torch.manual_seed(0)
    model = autoprune.create_model(name, num_classes=3, image_size=64).eval()
    example = (_images(1),)
    groups = autoprune.prunable_groups(model, example)
    before = autoprune.measure(model, example)["flops"]
    with torch.no_grad():
        outputs = [tuple(t.shape) for t in model.network_outputs(example[0])]
    pruned = autoprune.prune(copy.deepcopy(model), example, 0.3)
    assert before / autoprune.measure(pruned, example)["flops"] >= 1.5
    with torch.no_grad():
        assert [tuple(t.shape) for t in pruned.network_outputs(example[0])] == outputs
        detections = pruned(_images(2))
    assert len(detections) == 2 and all(d["boxes"].shape[1:] == (4,) for d in detections)
    unprunable = autoprune.engine.unprunable_groups(model, example)
    head = len(model.net.model) - 1
    outputs_kept = {f"net.model.{head}.cv{kind}.{level}.2" for kind in (2, 3) for level in range(3)}
    assert {g for g, reason in unprunable.items() if reason == "its channels are the model's outputs"} == outputs_kept
    attention = set(unprunable) - outputs_kept
    if name.endswith("yolo11n"):  # only the C2PSA block (layer 10), whose attention reshapes by a head count
        assert attention and all(group.startswith("net.model.10.") for group in attention)
        assert all(unprunable[group].startswith("net.model.10.m.0.attn.qkv.conv ") for group in attention)
    else:
        assert not attention
    assert not set(unprunable) & set(groups)


def test_training_takes_torchvision_style_targets_and_lowers_ultralytics_loss():
    torch.manual_seed(0)
    model = autoprune.create_model("ultralytics/yolov8n", num_classes=3, image_size=64).train()
    images = _images(4)
    targets = [{"boxes": torch.tensor([[8.0, 6.0, 40.0, 30.0]]), "labels": torch.tensor([1 + i % 2])} for i in range(4)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(25):
        losses = model(images, targets)
        assert set(losses) == {"box_loss", "cls_loss", "dfl_loss"}
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    assert max(totals[-5:]) < 0.5 * totals[0]  # the fixed batch is fitted
    with pytest.raises(autoprune.AutopruneError, match="needs targets"):
        model(images)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_classes": 1}, "ultralytics/yolov8n needs num_classes >= 2 .*got 1$"),
        ({"num_classes": 3, "image_size": 100}, "ultralytics/yolov8n needs image_size, a multiple of 32 .*got 100$"),
        ({"num_classes": 3, "in_channels": 1}, r"ultralytics/yolov8n takes RGB images \(in_channels=3\), got 1$"),
        (
            {"num_classes": 3, "weights": "runs/nowhere/best.pt"},
            "ultralytics/yolov8n weights must be a checkpoint file .*got 'runs/nowhere/best.pt' \\(no such file\\)$",
        ),
    ],
)
def test_bad_parameters_are_one_line(params, message):
    with pytest.raises(autoprune.AutopruneError, match=message):
        autoprune.create_model("ultralytics/yolov8n", **params)


def _scenes(tmp_path, count=24):
    """A coco_folder dataset: red cars and blue signs on grey frames."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = random.Random(0)
    document = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "sign"}]}
    for i in range(count):
        image = Image.new("RGB", (96, 64), (rng.randint(0, 80),) * 3)
        draw = ImageDraw.Draw(image)
        document["images"].append({"id": i, "file_name": f"{i}.png", "width": 96, "height": 64})
        for j in range(rng.randint(1, 3)):
            category, w, h = rng.choice([1, 2]), rng.randint(12, 30), rng.randint(12, 30)
            x, y = rng.randint(0, 96 - w), rng.randint(0, 64 - h)
            draw.rectangle([x, y, x + w, y + h], fill=(220, 40, 40) if category == 1 else (40, 40, 220))
            document["annotations"].append(
                {"id": 10 * i + j, "image_id": i, "category_id": category, "bbox": [x, y, w, h]}
            )
        image.save(folder / f"{i}.png")
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(document))
    return folder, annotations


@pytest.mark.parametrize("name", MODELS)
def test_a_yolo_study_searches_coco_folder_data_and_exports_to_onnx(tmp_path, capsys, name):
    import onnxruntime

    folder, annotations = _scenes(tmp_path)
    study = write_study_file(
        tmp_path / "yolo.toml",
        study={"max_accuracy_drop": 100.0, "trials": 2},
        model={"name": name, "params": {"image_size": 64}},
        dataset={
            "name": "coco_folder",
            "params": {"images": str(folder), "annotations": str(annotations), "image_size": 64, "val_fraction": 0.25},
        },
        train={"epochs": 10, "batch_size": 6, "lr": 0.01},
        search={"importances": ["l1"], "batch_size": 8, "calibration_batches": 1, "uniform_starts": [0.3]},
    )
    out = tmp_path / "out"
    assert cli.main(["search", str(study), "--out", str(out), "--quiet"]) == 0
    shown = capsys.readouterr().out
    assert "2 trials" in shown and "baseline map" in shown and "best trial" in shown
    target = tmp_path / "yolo.onnx"
    assert cli.main(["export", str(out), "-o", str(target), "--trial", "0"]) == 0
    shown = capsys.readouterr().out
    assert "val_map " in shown and "outputs match" in shown and "fewer" in shown

    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    model = autoprune.Study.load(out).rebuild(0).model.eval()
    for size in ((48, 64), (64, 40)):  # any image size: the letterbox is in the graph
        image = torch.rand(3, *size, generator=torch.Generator().manual_seed(size[1]))
        boxes, scores, labels = session.run(None, {"image": image.numpy()})
        with torch.no_grad():
            (want,) = model([image])
        assert boxes.shape == (len(scores), 4) and labels.shape == scores.shape == (len(want["scores"]),)
        assert torch.allclose(torch.from_numpy(scores), want["scores"], atol=1e-4)

    if name.endswith("yolov8n"):  # ultralytics' modules are not scriptable: one line, and the formats that work
        assert cli.main(["export", str(out), "-o", str(tmp_path / "yolo.torchscript"), "--trial", "0"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("autoprune: error: this model cannot be scripted to TorchScript (")
        assert error.endswith("; --format onnx or torch can save it") and "\n" not in error


def test_building_a_yolo_leaves_pillow_reading_images_as_before(tmp_path):
    """ultralytics' import replaces PIL.Image.open by one that pip-installs pi-heif for an unreadable file."""
    spoiled = tmp_path / "spoiled.jpg"
    spoiled.write_bytes(b"not an image")
    script = (
        "import PIL.Image, autoprune\n"
        "before = PIL.Image.open\n"
        "autoprune.create_model('ultralytics/yolov8n', num_classes=3, image_size=64)\n"
        "assert PIL.Image.open is before, PIL.Image.open\n"
        f"PIL.Image.open({str(spoiled)!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("PIL.UnidentifiedImageError"), (
        done.stderr
    )
