"""Prune one timm model of each family at one uniform rate, check each, and write the pass rate.

    python benchmarks/prune_timm.py [--rate 0.3] [--doc docs/pruning.md] [NAME ...]

Every model is built with random weights (``pretrained=False``) at the input size
it was designed for, pruned with :func:`autoprune.prune` at ``--rate`` in every
group, and checked: the output shape must be unchanged and the parameters fewer.
The table, the pass rate and every failure with its reason go into ``--doc``
between ``<!-- timm: ... -->`` and ``<!-- /timm -->`` (the rest of the document is
kept). ``make bench-timm`` runs it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from common import measured_with, survey

from autoprune.files import atomic_write_text
from autoprune_plugins.models_timm import input_size

#: One model per family the field prunes, small where the family has a small member.
FAMILIES = {
    "ResNet": "resnet18",
    "ResNet-D": "resnet50d",
    "ResNeXt": "resnext50_32x4d",
    "SE-ResNeXt": "seresnext26d_32x4d",
    "Res2Net": "res2net50_26w_4s",
    "EfficientNet": "efficientnet_b0",
    "EfficientNetV2": "tf_efficientnetv2_b0",
    "MobileNetV3": "mobilenetv3_small_100",
    "MobileNetV4": "mobilenetv4_conv_small",
    "MobileOne": "mobileone_s0",
    "GhostNet": "ghostnet_100",
    "RexNet": "rexnet_100",
    "RegNetX": "regnetx_002",
    "RegNetY": "regnety_002",
    "ConvNeXt": "convnext_atto",
    "RepVGG": "repvgg_a0",
    "DenseNet": "densenet121",
    "DLA": "dla34",
    "DPN": "dpn68",
    "CSPDarkNet": "cspdarknet53",
    "HRNet": "hrnet_w18_small",
    "HGNetV2": "hgnetv2_b0",
    "VGG": "vgg11_bn",
    "Inception": "inception_v3",
    "Xception": "xception41",
    "ViT": "vit_tiny_patch16_224",
    "DeiT": "deit_tiny_patch16_224",
    "Swin": "swin_tiny_patch4_window7_224",
    "CaiT": "cait_xxs24_224",
    "EVA-02": "eva02_tiny_patch14_224",
    "MobileViT": "mobilevit_xxs",
    "EfficientViT": "efficientvit_b0",
    "FastViT": "fastvit_t8",
    "LeViT": "levit_128s",
    "PoolFormer": "poolformer_s12",
    "PVT v2": "pvt_v2_b0",
    "EdgeNeXt": "edgenext_xx_small",
    "MLP-Mixer": "mixer_b16_224",
}


def _survey_apart(name: str, rate: float, limit: int) -> dict:
    """:func:`common.survey` of ``timm/<name>`` in a child process, stopped after ``limit`` seconds (a model
    can hang inside one call, where no signal reaches Python)."""
    started = time.perf_counter()
    command = [sys.executable, __file__, "--one", name, "--rate", str(rate)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return {"model": name, "ok": False, "reason": f"still pruning after {limit} s (stopped)", "seconds": limit}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {
            "model": name,
            "ok": False,
            "reason": f"the process failed: {last[:240]}",
            "seconds": time.perf_counter() - started,
        }
    row = json.loads(lines[-1])
    row["model"] = name
    return row


def render(rows: list[dict], families: dict[str, str], rate: float, limit: int, command: str) -> str:
    passed = sum(r["ok"] for r in rows)
    family = {model: fam for fam, model in families.items()}
    lines = [
        f"<!-- timm: written by {command} -->",
        "",
        "## timm models",
        "",
        f"Measured with `{command}` (uniform rate {rate}, random weights, each model at the input size it",
        "was designed for): one model per family, pruned by `autoprune.prune`, then checked to give the same",
        f"output shape with fewer parameters. A model still being pruned after {limit} s counts as failed.",
        "",
        f"**{passed} of {len(rows)} pass.**",
        "",
        "| family | model | params | pruned | FLOPs reduction | groups left whole | s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["ok"]:
            lines.append(
                f"| {family.get(r['model'], '')} | `timm/{r['model']}` | {r['params'] / 1e6:.2f} M | "
                f"{r['pruned_params'] / 1e6:.2f} M | {r['flops_reduction']:.2f}x | {r['unprunable']} | "
                f"{r['seconds']:.1f} |"
            )
    failed = [r for r in rows if not r["ok"]]
    lines += ["", "Failures, each with its reason:" if failed else "No model failed."]
    if failed:
        lines += ["", *(f"- {family.get(r['model'], '')} `timm/{r['model']}`: {r['reason']}" for r in failed)]
    measured = measured_with()
    lines += [
        "",
        (
            f"Measured on {measured['date']} at commit {measured['commit']}; {measured['machine']}; "
            f"{measured['versions']}."
        ),
        "",
        "<!-- /timm -->",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="timm model names (default: one per family)")
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--limit", type=int, default=120, help="seconds a model may take before it counts as failed")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--doc", help="write the table into this Markdown file (docs/pruning.md)")
    args = parser.parse_args(argv)
    families = {name: name for name in args.names} if args.names else FAMILIES
    rows = []
    if args.one:  # the child process of one model: its row as JSON
        print(json.dumps(survey(f"timm/{args.one}", (1, *input_size(args.one)), args.rate)))
        return 0
    for name in families.values():
        row = _survey_apart(name, args.rate, args.limit)
        rows.append(row)
        verdict = "ok" if row["ok"] else f"FAILED {row['reason']}"
        print(f"{name:34} {row['seconds']:6.1f}s {verdict}", flush=True)
    print(f"{sum(r['ok'] for r in rows)} of {len(rows)} pruned with the output shape unchanged")
    if args.doc:
        command = " ".join(
            ["python benchmarks/prune_timm.py", *args.names, *(["--rate", str(args.rate)] if args.rate != 0.3 else [])]
        )
        section = render(rows, families, args.rate, args.limit, command)
        path = Path(args.doc)
        old = path.read_text() if path.exists() else ""
        marked = re.compile(r"<!-- timm: .*?-->.*?<!-- /timm -->", re.DOTALL)
        text = marked.sub(lambda _: section, old) if marked.search(old) else old.rstrip("\n") + "\n\n" + section
        atomic_write_text(path, text.rstrip("\n") + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
