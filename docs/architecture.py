"""Draws docs/architecture.svg, the picture README.md opens with: `python docs/architecture.py`.

The picture is data (boxes and arrows below) rendered to plain SVG, so it changes in review like
code and needs no drawing tool; `--check` fails when the committed SVG is not what this file draws
(`make verify` runs it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

OUT = Path(__file__).with_name("architecture.svg")
WIDTH, HEIGHT = 1050, 600


@dataclass(frozen=True)
class Box:
    key: str
    x: int
    y: int
    w: int
    h: int
    title: str
    lines: tuple[str, ...] = ()
    fill: str = "#e3f2fd"
    stroke: str = "#37474f"


@dataclass(frozen=True)
class Arrow:
    """A straight arrow from (x1, y1) to (x2, y2), its label at (lx, ly)."""

    x1: int
    y1: int
    x2: int
    y2: int
    label: str = ""
    lx: int = 0
    ly: int = 0


CORE = "#e8f5e9"
NODE = "#fff8e1"
USER = "#f3e5f5"

BOXES = (
    Box(
        "user",
        20,
        30,
        210,
        90,
        "You",
        ("helm install gpupool", "kubectl apply InferencePool", "any KServe v2 gRPC client"),
        USER,
    ),
    Box(
        "api",
        290,
        30,
        220,
        90,
        "kube-apiserver",
        ("InferencePool, GPUPoolConfig,", "Pods, Services, Nodes, Lease,", "the mig-parted ConfigMap"),
        "#eceff1",
    ),
    Box("observe", 290, 200, 160, 80, "observe", ("nodes, pods, pools,", "prices, worker stats")),
    Box("decide", 486, 200, 190, 80, "decide (pure core)", ("placement, MIG plan,", "scaling policy, cost"), CORE),
    Box("act", 712, 200, 140, 80, "act", ("create, move, delete;", "label mig.config")),
    Box("report", 888, 200, 140, 80, "report", ("status, conditions,", "Events, /metrics")),
    Box(
        "gpu",
        290,
        400,
        370,
        180,
        "GPU nodes: A100 / H100 / H200 / B200",
        (
            "NVIDIA device plugin: nvidia.com/gpu, mig-<profile>",
            "MIG manager: mig.config -> mig.config.state",
            "",
            "gpupool-worker pods (KServe v2 gRPC):",
            "dynamic batcher, cost ledger, queue metrics;",
            "torch + Triton kernels, or vLLM / Triton",
        ),
        NODE,
    ),
    Box(
        "cpu",
        700,
        400,
        330,
        180,
        "CPU nodes",
        (
            "gpupool-worker pods: ONNX Runtime",
            "encoders, no torch in the image;",
            "",
            "the cheaper tier that keeps serving",
            "while the GPU tier scales to zero",
        ),
        NODE,
    ),
    Box(
        "sim",
        20,
        400,
        230,
        110,
        "offline, the same core",
        (
            "gpupool plan: files in,",
            "placement and $/h out",
            "gpupool simulate: traces in,",
            "$ and SLO attainment out",
        ),
        CORE,
    ),
)

ARROWS = (
    Arrow(230, 75, 290, 75, "manifests", 260, 68),
    Arrow(400, 120, 400, 200, "watch", 408, 150),
    Arrow(450, 240, 486, 240),
    Arrow(676, 240, 712, 240),
    Arrow(852, 240, 888, 240),
    Arrow(780, 280, 600, 400, "replica pods on the cheapest shape", 830, 322),
    Arrow(800, 280, 860, 400),
    Arrow(330, 400, 330, 280, "queue depth, served, $", 338, 345),
    Arrow(150, 120, 290, 460, "gRPC inference", 60, 250),
)


def _text(x: float, y: float, s: str, size: int = 13, weight: str = "normal", anchor: str = "start") -> str:
    return (
        f'<text x="{x:.0f}" y="{y:.0f}" font-family="DejaVu Sans, Arial, sans-serif" font-size="{size}" '
        f'font-weight="{weight}" text-anchor="{anchor}" fill="#263238">{escape(s)}</text>'
    )


def _box(b: Box) -> list[str]:
    out = [
        f'<rect x="{b.x}" y="{b.y}" width="{b.w}" height="{b.h}" rx="8" fill="{b.fill}" stroke="{b.stroke}" '
        f'stroke-width="1.5"/>',
        _text(b.x + 10, b.y + 20, b.title, 14, "bold"),
    ]
    out += [_text(b.x + 10, b.y + 40 + 17 * i, line, 12) for i, line in enumerate(b.lines) if line]
    return out


def _arrow(a: Arrow) -> list[str]:
    out = [
        f'<line x1="{a.x1}" y1="{a.y1}" x2="{a.x2}" y2="{a.y2}" stroke="#455a64" stroke-width="1.6" '
        f'marker-end="url(#head)"/>'
    ]
    if a.label:
        out.append(_text(a.lx, a.ly, a.label, 11, anchor="middle" if a.y1 == a.y2 else "start"))
    return out


def render() -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">',
        '<defs><marker id="head" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">'
        '<path d="M0,0 L10,4 L0,8 z" fill="#455a64"/></marker></defs>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fafafa"/>',
        _text(WIDTH / 2, 18, "gpupool: place, serve, measure, re-place", 15, "bold", "middle"),
        '<rect x="280" y="170" width="758" height="122" rx="10" fill="none" stroke="#90a4ae" stroke-dasharray="6 4"/>',
        _text(420, 188, "gpupool operator (kopf; leader-elected; one cycle = four stages)", 12, "bold"),
    ]
    for b in BOXES:
        parts += _box(b)
    for a in ARROWS:
        parts += _arrow(a)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    svg = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != svg:
            print(f"{OUT.name} is stale: run `python docs/architecture.py`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(svg)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
