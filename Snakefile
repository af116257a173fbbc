# diffusion-regimes: measure the three dynamical regimes of diffusion models.
# Thin: the config, its validation, and the rules. All logic is in the package
# src/diffusion_regimes (see DESIGN.md of the project and README.md).
import sys

from snakemake.utils import min_version

sys.path.insert(0, f"{workflow.basedir}/src")  # the package, installed or not

from diffusion_regimes.config import ConfigError, validate_config

min_version("9.0")


# The embedded default, unless --configfile names another config: configs are
# not merged, so --configfile FILE runs only FILE's experiments.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"



try:
    validate_config(config)
except ConfigError as err:
    sys.exit(f"diffusion-regimes: {err}")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
