# prunebench: every surveyed BERT pruning method, same model, task and budgets, measured.
#   snakemake --cores 2                          # the default profile (embedded MiniLM, SST-2)
#   snakemake --cores 2 --config profile=smoke   # tiny model, whole workflow in ~2 minutes
from snakemake.utils import min_version, validate

from prunebench.config import normalize_cli_values

min_version("9.0")


configfile: "workflow/config.yaml"


normalize_cli_values(config)  # --config budgets=[0.5] arrives as strings
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/analysis.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
