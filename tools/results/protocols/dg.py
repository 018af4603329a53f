"""Domain generalisation (``dg``): the ImageNet source, ImageNet-V2 / -Sketch / -A / -R, and the mean of the four."""
from __future__ import annotations

from tools.results.registry import BuildContext, register
from tools.results.table import Table
from tools.results.transfer import transfer_claims, transfer_table


@register("dg", order=30, claims=transfer_claims,
          layout="imagenet/TAG/CFG_Kshots/seedS + evaluation/TAG/CFG_Kshots/{imagenetv2,imagenet_sketch,imagenet_a,"
          "imagenet_r}/seedS")
def build(ctx: BuildContext) -> Table | None:
    return transfer_table("dg", ctx.scan.runs, ctx.scan)
