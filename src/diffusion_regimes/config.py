"""Loading and validation of the workflow configuration.

The JSON Schema is ``workflow/schemas/config.schema.yaml``. :func:`validate_config`
fills the schema's defaults, then checks the schema and the rules a schema
cannot say (score models that need a closed form or images), and raises
:class:`ConfigError` with one line naming the key and the fix.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from .io import InputError
from .schedule import DDPM_STEPS

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
#: score models that need a trained network
NETWORK_SCORES = ("unet",)
#: score models that can memorise (collapse is measured for them)
MEMORISING_SCORES = ("empirical",) + NETWORK_SCORES
#: solvable data models: an exact score (score model ``exact``) and a closed-form class
ANALYTIC_SOURCES = ("gaussian_mixture", "hierarchical_mixture", "curie_weiss")
#: dataset keys that may hold a list: the experiment expands into one per value
GRID_KEYS = ("d", "n", "beta")


class ConfigError(InputError):
    """A bad configuration; the message is one line naming the key."""


def load_schema(path: str | Path | None = None) -> dict:
    with open(path or SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref:
        node = root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _fill_defaults(instance, schema: dict, root: dict) -> None:
    """Insert the schema's defaults into ``instance`` in place (recursively)."""
    schema = _resolve(schema, root)
    if not isinstance(instance, dict):
        return
    props = dict(schema.get("properties", {}))
    for branch in schema.get("oneOf", []):  # the branch whose const or enum admits the instance
        bprops = branch.get("properties", {})
        if all(instance.get(k) == v["const"] for k, v in bprops.items() if "const" in v) and all(
                instance.get(k) in v["enum"] for k, v in bprops.items() if "enum" in v and k == "source"):
            props.update(bprops)
    for key, sub in props.items():
        sub_r = _resolve(sub, root)
        if key not in instance and "default" in sub_r:
            instance[key] = copy.deepcopy(sub_r["default"])
        if key in instance:
            _fill_defaults(instance[key], sub_r, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in props:
                _fill_defaults(value, extra, root)


def _path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _describe(err: jsonschema.ValidationError) -> str:
    where = _path(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(_resolve(err.schema, {}).get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        return (f"{where}: unknown key {unknown[0]!r}" + (f" (allowed: {', '.join(allowed)})"
                                                          if allowed else ""))
    if err.validator == "oneOf" and isinstance(err.instance, dict):
        return _describe_branch(where, err)
    return f"{where}: {err.message}"


def _describe_branch(where: str, err: jsonschema.ValidationError) -> str:
    """Explain a ``oneOf`` failure by the errors of the branch whose ``const`` matches."""
    source = err.instance.get("source")
    def admits(branch: dict) -> bool:
        spec = branch.get("properties", {}).get("source", {})
        return spec.get("const") == source or source in spec.get("enum", [])

    branches = [i for i, b in enumerate(err.validator_value) if admits(b)]
    if not branches:
        choices = [c for b in err.validator_value for c in
                   ([b["properties"]["source"]["const"]] if "const" in b["properties"]["source"]
                    else b["properties"]["source"]["enum"])]
        return f"{where}.source: {source!r} is not one of {choices}"
    subs = [e for e in err.context if e.relative_schema_path[0] == branches[0]]
    sub = subs[0]
    path = ".".join([where] + [str(p) for p in sub.relative_path])
    if sub.validator == "additionalProperties":
        unknown = sorted(set(sub.instance) - set(sub.schema.get("properties", {})))
        return f"{path}: unknown key {unknown[0]!r} for source {source!r}"
    return f"{path}: {sub.message}"


def _fail(where: str, what: str) -> ConfigError:
    return ConfigError(f"config error at {where}: {what}; see config/README.md")


#: JSON Schema's "integer" admits 1000.0; a config integer must be written as one
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)))


def _grid_value(value) -> str:
    return str(value).replace(".", "p").replace("-", "m")


def expand_grids(experiments: dict) -> dict:
    """Experiments whose dataset has a list for ``d``, ``n`` or ``beta`` become one
    experiment per combination, named ``{name}_d256``, ``{name}_d64_beta1p5``, ...
    (``.`` written ``p``), with ``group: name``; the others are unchanged."""
    out = {}
    for name, exp in experiments.items():
        data = exp["dataset"]
        lists = [k for k in GRID_KEYS if isinstance(data.get(k), list)]
        if not lists:
            out[name] = exp
            continue
        combos = [{}]
        for k in lists:
            combos = [{**c, k: v} for c in combos for v in data[k]]
        for combo in combos:
            member = copy.deepcopy(exp)
            member["dataset"].update(combo)
            member["group"] = exp.get("group") or name
            sub = name + "".join(f"_{k}{_grid_value(v)}" for k, v in combo.items())
            if sub in experiments or sub in out:
                raise _fail(f"experiments.{name}", f"its grid makes {sub!r}, which is already an experiment")
            out[sub] = member
    return out


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Fill defaults into ``config`` (in place) and validate it, expanding grids
    (:func:`expand_grids`); returns it.

    Raises :class:`ConfigError` whose message names the offending key.
    """
    schema = schema or load_schema()
    _fill_defaults(config, schema, schema)
    errors = list(_Validator(schema).iter_errors(config))
    if errors:
        err = min(errors, key=lambda e: (len(e.absolute_path), e.validator != "additionalProperties"))
        raise ConfigError(f"config error at {_describe(err)}; see config/README.md")
    config["experiments"] = expand_grids(config["experiments"])
    for name, exp in config["experiments"].items():
        where = f"experiments.{name}"
        source = exp["dataset"]["source"]
        for score in exp["scores"]:
            if score == "exact" and source not in ANALYTIC_SOURCES:
                raise _fail(f"{where}.scores", f"'exact' needs a solvable data model (dataset source one of "
                            f"{', '.join(ANALYTIC_SOURCES)})")
            if score in NETWORK_SCORES and source in ANALYTIC_SOURCES:
                raise _fail(f"{where}.scores", f"{score!r} needs image data, not source {source}")
        if source == "hierarchical_mixture" and exp["dataset"]["d"] % 2:
            raise _fail(f"{where}.dataset.d", "the hierarchical mixture needs an even d (orthogonal u and v)")
        if exp["symmetry"]["enabled"] and source != "gaussian_mixture":
            raise _fail(f"{where}.symmetry.enabled", "the potential is that of the two-Gaussian mixture")
        for key in ("cloning", "collapse"):
            bt = exp[key]["branch_times"]
            if any(b <= a for a, b in zip(bt, bt[1:])):
                raise _fail(f"{where}.{key}.branch_times", "list them in strictly increasing order")
        for key in ("sampler", "network_sampler"):
            s = exp[key]
            if s["grid"] != "ddpm" and not s["t_end"] < s["T"]:
                raise _fail(f"{where}.{key}.t_end", f"must be below T={s['T']}")
            if s["grid"] == "ddpm" and s["steps"] > DDPM_STEPS - 1:
                raise _fail(f"{where}.{key}.steps", f"the ddpm grid has at most {DDPM_STEPS - 1} steps")
        ent = exp["entropy"]
        if ent["t_min"] >= ent["t_max"]:
            raise _fail(f"{where}.entropy.t_min", "must be below t_max")
        if any(s in NETWORK_SCORES for s in exp["scores"]) and exp["dataset"].get("size"):
            factor = 2 ** (len(exp["model"]["channel_mult"]) - 1)
            if exp["dataset"]["size"] % factor:
                raise _fail(f"{where}.dataset.size", f"the U-Net with {len(exp['model']['channel_mult'])} "
                            f"resolutions needs a size divisible by {factor}")
    return config


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh)
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config {path} must be a mapping with an 'experiments' key")
    return validate_config(config)


def needs_classifier(exp_cfg: dict) -> bool:
    """Data without a closed-form class need a trained classifier for cloning."""
    return exp_cfg["dataset"]["source"] not in ANALYTIC_SOURCES
