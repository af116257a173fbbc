# diffusion-regimes: measure the three dynamical regimes of diffusion models.
# Thin: the config, its validation, and the rules. All logic is in the package
# src/diffusion_regimes (docs/design.md: the stage contract and which module owns what).
import sys

from snakemake.utils import min_version

sys.path.insert(0, f"{workflow.basedir}/src")  # the package, installed or not

from diffusion_regimes.config import InputError, typed_overrides, validate_config
from diffusion_regimes.io import check_kept_inputs

min_version("9.0")

# The config comes from --configfile. The workflow profile (profiles/default, read
# automatically) names the embedded default config/config.yaml as its configfile, so a
# --configfile on the command line replaces the default instead of being merged into it.
if not config:
    sys.exit("diffusion-regimes: no config: pass --configfile config/config.yaml (or your own), "
             "or run with the workflow profile profiles/default")

try:
    typed_overrides(config, workflow.config_settings.config)  # --config values nested in YAML
    validate_config(config)
except InputError as err:  # a bad config or a plugin that cannot be loaded
    sys.exit(f"diffusion-regimes: {err}")


report: "workflow/report/workflow.rst"


# A damaged results file that jobs would read is refused before any job starts: Snakemake
# removes a job's earlier outputs when it starts, valid or not.
onstart:
    try:
        check_kept_inputs(workflow.dag.needrun_jobs())
    except InputError as err:
        sys.exit(f"diffusion-regimes: {err}")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/memorisation.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
