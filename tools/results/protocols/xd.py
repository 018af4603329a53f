"""Cross-dataset transfer (``xd``): the ImageNet source, the 10 target datasets, and the mean of the targets."""
from __future__ import annotations

from tools.results.registry import BuildContext, register
from tools.results.table import Table
from tools.results.transfer import transfer_claims, transfer_table


@register("xd", order=20, claims=transfer_claims,
          layout="DATASET/TAG/CFG_Kshots/seedS + evaluation/TAG/CFG_Kshots/DATASET/seedS "
          "(or cross_domain_and_datasets/{train,test}/DATASET/shots_K/TAG/CFG/seedS)")
def build(ctx: BuildContext) -> Table | None:
    return transfer_table("xd", ctx.scan.runs, ctx.scan)
