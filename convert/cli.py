"""`featdistill weights import-onnx`: turn an ONNX CLIP image tower into open_clip weights.

The images for the numeric check come from `--images` (files or folders), or are synthetic when
none are given: either way the command refuses to write weights that do not reproduce the graph.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from shell.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="convert pretrained backbone weights from other formats")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    imp = wsub.add_parser(
        "import-onnx",
        help="convert a transformers CLIP image tower exported to ONNX (fp32 or INT8) to open_clip",
        description="Map the graph's weights onto open_clip (dequantising INT8), load them strictly, "
        "compare the image embeddings with onnxruntime and write a .safetensors file only if they "
        "agree: an INT8 graph is judged against its own dequantised fp32 rewrite "
        "(--min-exact-cosine), which does not depend on the CPU; any other graph against itself "
        "(--min-cosine).",
    )
    imp.add_argument("onnx", type=Path, metavar="FILE", help="the .onnx graph")
    imp.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    imp.add_argument(
        "--arch", default="ViT-B-16",
        help="open_clip model config name (default ViT-B-16); a QuickGELU graph selects its "
        "-quickgelu variant",
    )
    imp.add_argument(
        "--config", type=_json_object, default=None, metavar="JSON",
        help="architecture overrides merged over --arch, as in a BackboneSpec (JSON object)",
    )
    imp.add_argument(
        "--images", type=Path, nargs="+", default=[], metavar="PATH",
        help="images or folders for the numeric check (default: synthetic images)",
    )
    imp.add_argument("--max-images", type=int, default=8, help="images used for the check (default 8)")
    imp.add_argument(
        "--min-cosine", type=float, default=0.95,
        help="fp32 graphs (and quantised ones with no dequantised rewrite): fail below this mean "
        "cosine to the graph (default 0.95). INT8 graphs: only explain an as-shipped agreement "
        "below it, which depends on the CPU (about 0.98 with VNNI, about 0.5 on x86 without)",
    )
    imp.add_argument(
        "--min-exact-cosine", type=float, default=0.999,
        help="fail below this mean cosine to the same graph run on its dequantised weights, which "
        "an exact conversion matches to rounding (default 0.999; one transposed matrix scores < 0.995)",
    )
    imp.set_defaults(func=_import_onnx)

    dino = wsub.add_parser(
        "import-dinov2-onnx",
        help="convert the DINOv2 backbone inside an fp32 ONNX graph to a transformers Dinov2Model folder",
        description="Read the transformers Dinov2Model tensors out of the graph (other parts of it, "
        "such as a task head, are ignored), build the model, compare its final-layernorm tokens "
        "with the graph's in onnxruntime (when installed) and write config.json + model.safetensors "
        "only if they agree.",
    )
    dino.add_argument("onnx", type=Path, metavar="FILE", help="the .onnx graph")
    dino.add_argument("--out", type=Path, required=True, help="the model folder to write")
    dino.add_argument("--heads", type=int, default=None,
                      help="attention heads (not in any shape; default: width / 64, as in every DINOv2)")
    dino.add_argument("--max-abs-diff", type=float, default=1e-3,
                      help="fail above this difference to the graph's tokens (default 1e-3)")
    dino.set_defaults(func=_import_dinov2_onnx)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def synthetic_images(count: int, size: int = 256, seed: int = 0) -> list[Image.Image]:
    """Smooth colour fields with a hard-edged disc and grain: a stand-in for photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    images = []
    for _ in range(count):
        coarse = Image.fromarray(rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8))
        arr = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), np.float32).copy()
        (cy, cx), r = rng.uniform(0.2, 0.8, 2) * size, rng.uniform(0.1, 0.3) * size
        arr[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        arr += rng.normal(0, 8, arr.shape)
        images.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB"))
    return images


def _check_images(paths: list[Path], limit: int) -> list[Image.Image]:
    from detector.cli_detect import collect_images
    from detector.images import ImageDecodeError, load_image_file

    if limit < 1:
        raise CliError("--max-images must be at least 1")
    if not paths:
        return synthetic_images(limit)
    found = collect_images(paths)
    if not found:
        raise CliError(f"no images found under {', '.join(map(str, paths))}")
    # Evenly spaced picks, so several folders given together all contribute.
    picks = [found[int(i)] for i in np.linspace(0, len(found) - 1, min(limit, len(found)))]
    try:
        return [load_image_file(p) for p in picks]
    except ImageDecodeError as exc:
        raise CliError(str(exc)) from exc


def _per_image(agreement) -> str:
    return f"{agreement.reference}: " + " ".join(f"{c:.4f}" for c in agreement.cosines)


def _import_onnx(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401  (imported here only to fail early and clearly)
        import onnxruntime  # noqa: F401

        from convert.onnx_import import DisagreementError, OnnxImportError, import_onnx
    except ImportError as exc:
        raise CliError(f"{exc.name} is not installed: pip install 'featdistill[onnx]'") from exc
    if not args.onnx.is_file():
        raise CliError(f"{args.onnx} not found")
    images = _check_images(args.images, args.max_images)
    source = "synthetic" if not args.images else "given"
    try:
        report = import_onnx(
            args.onnx, args.out, images, args.arch, args.config, args.min_cosine, args.min_exact_cosine
        )
    except DisagreementError as exc:
        figures = "; ".join(_per_image(a) for a in exc.agreements)
        raise CliError(f"{exc}. Per image: {figures}. {args.out} not written") from exc
    except OnnxImportError as exc:
        raise CliError(str(exc)) from exc
    d = report.dims
    print(
        f"read {args.onnx.name}: {d['layers']} blocks, width {d['width']}, patch {d['patch_size']}, "
        f"image {d['image_size']}, embed {d['embed_dim']}, {report.activation}; "
        f"{report.linear} weight matrices, {report.quantised_linear} of them INT8 (dequantised)"
    )
    override = f" {json.dumps(report.spec.config)}" if report.spec.config else ""
    print(f"built open_clip {report.spec.model}{override}: {report.params:,} parameters, "
          "loaded strictly")
    print(f"onnxruntime agreement on {len(images)} {source} images:")
    if report.quantised and len(report.agreements) == 1:
        print("  (no dequantised reference: the graph is quantised in a way this tool cannot undo)")
    decides = report.agreements[0]
    for a in report.agreements:
        if a is not decides:
            need = "(reported, does not decide)"
        else:
            need = f"(need >= {args.min_exact_cosine if a.reference == 'dequantised' else args.min_cosine})"
        print(f"  {a.summary()} {need}; per image " + " ".join(f"{c:.4f}" for c in a.cosines))
    if report.note:
        print(f"note: {report.note}")
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB) in {report.seconds['total']:.1f} s")
    return 0


def _import_dinov2_onnx(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401  (imported here only to fail early and clearly)

        from convert.onnx_dinov2 import Dinov2ImportError, import_dinov2
    except ImportError as exc:
        raise CliError(f"{exc.name} is not installed: pip install 'featdistill[onnx]'") from exc
    try:
        import onnxruntime  # noqa: F401
        check = True
    except ImportError:
        check = False
    if not args.onnx.is_file():
        raise CliError(f"{args.onnx} not found")
    try:
        config, result = import_dinov2(args.onnx, args.out, args.heads, check, args.max_abs_diff)
    except Dinov2ImportError as exc:
        raise CliError(f"{exc}; {args.out} not written") from exc
    print(f"read {args.onnx.name}: Dinov2Model {config['num_hidden_layers']} blocks, width "
          f"{config['hidden_size']}, {config['num_attention_heads']} heads, patch {config['patch_size']}")
    if result is None:
        print("onnxruntime is not installed: the conversion was NOT checked against the graph")
    else:
        print(f"onnxruntime agreement on {result.images} random inputs (final layernorm tokens): "
              f"max abs diff {result.max_abs_diff:.2e}, min cosine {result.min_cosine:.7f}")
    print(f"wrote {args.out}")
    return 0
