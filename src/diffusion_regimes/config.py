"""The configuration layer: schema, defaults, validation, and the facts the rules need.

It does not import torch (a test checks), so evaluating the workflow's DAG, which
happens once per job on a cluster, stays cheap. The JSON Schema ships inside the
package (``schemas/config.schema.yaml``). :func:`validate_config` fills the
schema's defaults, loads the config's ``plugins`` (data models of the user's own,
whose classes carry their schema entries), checks the schema and the rules a
schema cannot say, expands grids, and raises :class:`ConfigError` with one line
naming the key and the fix.

Here also live the names the rules share with the stages: the score kinds, the
kinds of the data sources (from the schema's ``x-kind``), and the run options,
the keys that cannot change a result and therefore reach jobs from the config
rather than as parameters (a change of them re-runs nothing).
"""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from .errors import ConfigError, InputError
from .memorisation import snapshot_steps
from .schedule import DDPM_STEPS, sampler_grid, snap_to_grid
from .scoremodels import LABEL, MODEL_FILES, needs_message, registered_kinds, score_kind
from .scoremodels.external import sampler_range

__all__ = ["ConfigError", "InputError", "validate_config", "load_config", "load_yaml"]

#: dataset keys that may hold a list: the experiment expands into one per value
GRID_KEYS = ("d", "n", "beta", "per_class")
#: per config block, the keys that cannot change a result (speed, resumption): they reach the
#: job from the config, not as rule parameters, so changing them re-runs nothing
RUN_OPTIONS = {"train": ("checkpoint_every", "compile", "channels_last")}


@lru_cache(maxsize=1)
def _package_schema() -> dict:
    text = resources.files("diffusion_regimes").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def load_schema(plugin_entries: dict | None = None, plugins: list[str] | None = None) -> dict:
    """The config schema, with the dataset block assembled from ``$defs/datasets`` and the
    plugins' entries (name -> JSON Schema of the dataset block, with ``x-kind``), and the
    score models: the built-in ones and those of the (loaded) ``plugins``."""
    schema = copy.deepcopy(_package_schema())
    entries = {**schema["$defs"]["datasets"], **(plugin_entries or {})}
    dataset = schema["$defs"]["dataset"]
    dataset["properties"] = {"source": {"enum": [n for e in entries.values() for n in _source_names(e)]}}
    dataset["oneOf"] = list(entries.values())
    _add_score_models(schema, plugins or [])
    return schema


def _add_score_models(schema: dict, plugins: list[str]) -> None:
    """The score models of the registry in the experiment schema: the names a ``scores``
    list and ``memorisation.score`` admit, and a plugin kind's config block. Only the
    built-in kinds and those of the config's own ``plugins`` (another config's plugins,
    imported earlier in the same process, are not this config's)."""
    from .datamodels import PLUGIN_MODULES

    modules = {PLUGIN_MODULES[p] for p in plugins if p in PLUGIN_MODULES}
    kinds = {name: cls for name, cls in registered_kinds().items()
             if cls.__module__.startswith("diffusion_regimes.") or cls.__module__ in modules}
    props = schema["$defs"]["experiment"]["properties"]
    labelled = [n for n, c in kinds.items() if c.labelled]
    props["scores"]["items"] = {
        "oneOf": [{"enum": list(kinds)}] + ([{"type": "string", "pattern": f"^({'|'.join(labelled)})_{LABEL}$"}]
                                           if labelled else []),
        "x-error": f"one of {list(kinds)}" + "".join(f", or {n}_LABEL (a model of {n}.models)" for n in labelled)}
    props["memorisation"]["properties"]["score"]["enum"] = [n for n, c in kinds.items() if c.trainable]
    for cls in kinds.values():
        if cls.block and cls.block not in props and cls.schema is None:
            raise ConfigError(f"plugins: score model {cls.name!r} has no schema for its config block {cls.block!r} "
                              "(a class attribute 'schema', a JSON Schema object)")
        if cls.block and cls.schema is not None:
            if cls.block in props:
                raise ConfigError(f"plugins: score model {cls.name!r} names the config block {cls.block!r}, "
                                  "which the experiment already has; give it another")
            props[cls.block] = {"type": "object", "default": {}, **copy.deepcopy(cls.schema)}


def _source_names(entry: dict) -> list[str]:
    spec = entry.get("properties", {}).get("source", {})
    return [spec["const"]] if "const" in spec else list(spec.get("enum", []))


@lru_cache(maxsize=1)
def _builtin_sources() -> dict[str, dict]:
    """Source name -> its schema entry, for the data models of the package."""
    return {n: e for e in _package_schema()["$defs"]["datasets"].values() for n in _source_names(e)}


#: source name -> schema entry of the plugins loaded so far
_PLUGIN_SOURCES: dict[str, dict] = {}


def source_entry(source: str) -> dict:
    """The schema entry of a data source (its ``x-kind``, ``x-symmetry``, keys)."""
    entry = _builtin_sources().get(source) or _PLUGIN_SOURCES.get(source)
    if entry is None:
        raise ConfigError(f"config error: unknown dataset source {source!r}; see config/README.md")
    return entry


def source_kind(source: str) -> str:
    """``solvable`` or ``images``: the kind of a data source, from its schema entry."""
    return source_entry(source)["x-kind"]


def needs_classifier(exp_cfg: dict) -> bool:
    """Data without closed-form classes (images) need a trained classifier for cloning."""
    return source_kind(exp_cfg["dataset"]["source"]) != "solvable"


def is_image(exp_cfg: dict) -> bool:
    return source_kind(exp_cfg["dataset"]["source"]) == "images"


def needs_t_S(exp_cfg: dict) -> bool:
    """Whether an experiment measures in units of t_S = 1/2 log Lambda (cloning or collapse
    branch times in t_S units, symmetry times, U-turns in t_S units), and so needs Lambda > 1."""
    uturn = exp_cfg["uturn"]
    return (exp_cfg["cloning"]["time_unit"] == "t_S" or exp_cfg["collapse"]["time_unit"] == "t_S"
            or exp_cfg["symmetry"]["enabled"] or (uturn["enabled"] and uturn["time_unit"] == "t_S"))


def memorisation_steps(exp_cfg: dict) -> list[int]:
    """The training steps of an experiment's weight snapshots (memorisation study), the last
    one ``train.steps``."""
    mem = exp_cfg["memorisation"]
    return snapshot_steps(mem["first_step"], exp_cfg["train"]["steps"], mem["per_decade"])


def result_keys(block: str, cfg: dict) -> dict:
    """A config block without its run options (what reaches the rule as a parameter)."""
    return {k: v for k, v in cfg.items() if k not in RUN_OPTIONS.get(block, ())}


def run_options(config: dict, exp: str, block: str) -> dict:
    """The run options of an experiment's block, read by the job from the whole config."""
    cfg = config["experiments"][exp][block]
    return {k: cfg[k] for k in RUN_OPTIONS.get(block, ()) if k in cfg}


#: rules whose stage takes run options, and the config block they come from
_RULE_OPTIONS = {"train": "train", "train_snapshot": "train"}


def job_options(rule: str, config: dict, wildcards) -> dict:
    """Extra keyword arguments of a job's stage read from the whole config (not params):
    the run options of the rule's block, e.g. ``{"options": {"checkpoint_every": 500, ...}}``."""
    block = _RULE_OPTIONS.get(rule)
    return {"options": run_options(config, wildcards.exp, block)} if block else {}


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
    for branch in schema.get("oneOf", []):  # the branch of a dataset block whose source admits the instance
        if isinstance(branch, dict) and instance.get("source") in _source_names(branch):
            props.update(branch.get("properties", {}))
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
    if err.validator == "oneOf" and "x-error" in err.schema:
        return f"{where}: {err.instance!r} is not {err.schema['x-error']}"
    return f"{where}: {err.message}"


def _describe_branch(where: str, err: jsonschema.ValidationError) -> str:
    """Explain a ``oneOf`` failure of a dataset block by the errors of the branch of its source."""
    source = err.instance.get("source")
    branches = [i for i, b in enumerate(err.validator_value) if source in _source_names(b)]
    if not branches:
        choices = [n for b in err.validator_value for n in _source_names(b)]
        return f"{where}.source: {source!r} is not one of {choices}"
    subs = [e for e in err.context if e.relative_schema_path[0] == branches[0]]
    if not subs:  # valid under its own branch, so it matched several
        return f"{where}.source: {source!r} matches several dataset entries of the schema"
    sub = min(subs, key=lambda e: len(e.relative_path))
    path = ".".join([where] + [str(p) for p in sub.relative_path])
    if sub.validator == "additionalProperties":
        unknown = sorted(set(sub.instance) - set(sub.schema.get("properties", {})))
        return f"{path}: unknown key {unknown[0]!r} for source {source!r}"
    if sub.validator == "oneOf" and "x-error" in sub.schema:
        return f"{path}: {sub.instance!r} is not {sub.schema['x-error']}"
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
    (``.`` written ``p``), with ``group: name``; a memorisation study with
    ``memorisation.replicates`` R > 1 makes R experiments of each, ``{...}_r0`` ... ``_r{R-1}``
    (the name draws the data and seeds the training, so each is an independent run), in the
    same group; the others are unchanged."""
    out = {}
    for name, exp in experiments.items():
        data = exp["dataset"]
        lists = [k for k in GRID_KEYS if isinstance(data.get(k), list)]
        memo = exp.get("memorisation") or {}
        replicates = int(memo.get("replicates") or 1) if memo.get("enabled") else 1
        if not lists and replicates == 1:
            out[name] = exp
            continue
        combos = [{}]
        for k in lists:
            combos = [{**c, k: v} for c in combos for v in data[k]]
        for combo in combos:
            base = name + "".join(f"_{k}{_grid_value(v)}" for k, v in combo.items())
            for r in range(replicates):
                member = copy.deepcopy(exp)
                member["dataset"].update(combo)
                member["group"] = exp.get("group") or name
                sub = base if replicates == 1 else f"{base}_r{r}"
                if sub in experiments or sub in out:
                    raise _fail(f"experiments.{name}", f"its grid makes {sub!r}, which is already an experiment")
                out[sub] = member
    return out


def _plugin_entries(specs: list) -> dict:
    """Load the plugins and return their data models' schema entries (name -> entry)."""
    if not specs:
        return {}
    if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
        raise _fail("plugins", "give a list of module names or .py file paths")
    from .datamodels import load_plugins  # torch-free; the plugin modules may import what they like

    entries = {}
    for cls in load_plugins(specs):
        if cls.name in _builtin_sources():
            raise _fail("plugins", f"data model {cls.name!r} of {cls.__module__} has the name of a built-in "
                        "source; give it another name")
        entry = copy.deepcopy(cls.schema)
        entry.setdefault("properties", {})["source"] = {"const": cls.name}
        entry["x-kind"] = cls.kind
        entries[cls.name] = entry
        _PLUGIN_SOURCES[cls.name] = entry
    return entries


def _check_experiment(name: str, exp: dict) -> None:
    """The rules of one experiment that the schema cannot say."""
    where = f"experiments.{name}"
    source = exp["dataset"]["source"]
    kind = source_kind(source)
    for score in exp["scores"]:
        score_kind(score).check(where, exp, kind)
    check = source_entry(source).get("x-check")  # a torch-free function (module:function) of the dataset block
    if check:
        module, function = check.split(":")
        try:
            getattr(importlib.import_module(module), function)(exp["dataset"])
        except InputError as err:
            raise _fail(f"{where}.dataset", str(err)) from None
    if exp["symmetry"]["enabled"] and not source_entry(source).get("x-symmetry"):
        raise _fail(f"{where}.symmetry.enabled", f"the potential is that of the two-Gaussian mixture, not {source}")
    for key in ("cloning", "collapse", "uturn"):
        bt = exp[key]["branch_times"]
        if any(b <= a for a, b in zip(bt, bt[1:])):
            raise _fail(f"{where}.{key}.branch_times", "list them in strictly increasing order")
    for key in ("sampler", "network_sampler"):
        s = exp[key]
        if s["grid"] != "ddpm" and not s["t_end"] < s["T"]:
            raise _fail(f"{where}.{key}.t_end", f"must be below T={s['T']}")
        if s["grid"] == "ddpm" and s["steps"] > DDPM_STEPS - 1:
            raise _fail(f"{where}.{key}.steps", f"the ddpm grid has at most {DDPM_STEPS - 1} steps")
        if s["grid"] == "ddpm" and s["method"] == "euler_maruyama":
            raise _fail(f"{where}.{key}.method", "euler_maruyama is unstable on the ddpm grid as t -> 0 (its first "
                        "steps are long next to Delta_t): use heun or ddpm, or the log_snr grid")
    used = [score_kind(s).sampler for s in exp["scores"]]
    for stage in ("cloning", "uturn"):  # OU branch times must lie inside every sampler that runs them
        if exp[stage]["time_unit"] != "ou" or (stage == "uturn" and not exp["uturn"]["enabled"]):
            continue
        for key in dict.fromkeys(used):
            lo, hi = sampler_range(exp[key])
            bad = [b for b in exp[stage]["branch_times"] if not lo <= b <= hi]
            if bad:
                raise _fail(f"{where}.{stage}.branch_times", f"OU time {bad[0]} is outside the {key}'s grid "
                            f"[{lo:.4g}, {hi:.4g}]: raise {key}.T or lower the times")
            try:
                snap_to_grid(sampler_grid(exp[key]), exp[stage]["branch_times"])
            except InputError as err:
                why = str(err).replace("the sampler's", f"the {key}'s")
                raise _fail(f"{where}.{stage}.branch_times", why) from None
    if (exp["uturn"]["enabled"] and exp["uturn"]["start"] == "reference" and kind == "images"
            and not exp["dataset"].get("holdout")):
        raise _fail(f"{where}.uturn.start", "the reference set is empty when dataset.holdout is 0: start from "
                    "the training points, or hold some out")
    _check_memorisation(where, exp, kind)
    _check_shards(where, exp)
    ent = exp["entropy"]
    if ent["t_min"] >= ent["t_max"]:
        raise _fail(f"{where}.entropy.t_min", "must be below t_max")


def _check_memorisation(where: str, exp: dict, kind: str) -> None:
    mem = exp["memorisation"]
    if not mem["enabled"]:
        return
    cls = score_kind(mem["score"])
    if cls.needs and cls.needs != kind:
        raise _fail(f"{where}.memorisation.score", needs_message(cls, kind))
    if mem["first_step"] > exp["train"]["steps"]:
        raise _fail(f"{where}.memorisation.first_step", f"{mem['first_step']} is past train.steps = "
                    f"{exp['train']['steps']}: lower it or train longer")
    if kind == "images" and not exp["dataset"].get("holdout"):
        raise _fail(f"{where}.memorisation.enabled", "the study measures quality and held-out loss on the "
                    "held-out images: set dataset.holdout > 0")
    if mem["replicates"] > 1 and exp["dataset"].get("split_seed") is not None:
        raise _fail(f"{where}.dataset.split_seed", "replicates draw their own data each, a split_seed would give "
                    "them one: leave split_seed out, or set memorisation.replicates: 1")


def _check_shards(where: str, exp: dict) -> None:
    """More shards than blocks of work would leave a shard with nothing to do: refused
    (the block size changes the random numbers, so it is not adjusted behind your back)."""
    def blocks(n: int, batch: int) -> int:
        return math.ceil(n / batch)

    c, k, e = exp["cloning"], exp["collapse"], exp["entropy"]
    limits = {"cloning": (blocks(c["n_pairs"], c["pair_batch"]),
                          f"ceil(n_pairs / pair_batch) = ceil({c['n_pairs']} / {c['pair_batch']})"),
              "collapse": (max(blocks(k["n_trajectories"], k["pair_batch"]), blocks(k["n_pairs"], k["pair_batch"])),
                           f"the blocks of pair_batch = {k['pair_batch']} trajectories or pairs"),
              "entropy": (e["n_t"], "n_t")}
    for key, (most, what) in limits.items():
        if exp[key]["shards"] > most:
            raise _fail(f"{where}.{key}.shards", f"{exp[key]['shards']} shards but only {most} blocks of work "
                        f"({what}); use at most {most} shards, or smaller blocks")


def validate_config(config: dict) -> dict:
    """Fill defaults into ``config`` (in place) and validate it, expanding grids
    (:func:`expand_grids`); returns it.

    Raises :class:`ConfigError` whose message names the offending key.
    """
    if not isinstance(config, dict):
        raise ConfigError("config error: the config must be a mapping with an 'experiments' key; "
                          "see config/README.md")
    schema = load_schema(_plugin_entries(config.get("plugins", [])), config.get("plugins", []))
    _fill_defaults(config, schema, schema)
    errors = list(_Validator(schema).iter_errors(config))
    if errors:
        err = min(errors, key=lambda e: (len(e.absolute_path), e.validator != "additionalProperties"))
        raise ConfigError(f"config error at {_describe(err)}; see config/README.md")
    for name, exp in config["experiments"].items():  # the study's group is a grid over the training-set size
        others = [k for k in GRID_KEYS if k not in ("n", "per_class") and isinstance(exp["dataset"].get(k), list)]
        if exp["memorisation"]["enabled"] and others:
            raise _fail(f"experiments.{name}.dataset.{others[0]}", "the memorisation study fits tau_mem against n: "
                        "make only n (per_class for images) a list, one experiment per other value")
    config["experiments"] = expand_grids(config["experiments"])
    token = MODEL_FILES.set(bool(config.get("check_models", True)))
    try:
        for name, exp in config["experiments"].items():
            _check_experiment(name, exp)
    finally:
        MODEL_FILES.reset(token)
    return config


def typed_overrides(config: dict, overrides: Mapping) -> None:
    """Give ``--config`` overrides their YAML types again, in ``config`` (in place).

    Snakemake reads a nested ``--config`` value (``'experiments={gmm: {cloning: {n_pairs:
    64}}}'``) with YAML's base loader, which leaves every scalar inside it a string, and
    merges it into the config; here each such scalar is read as a YAML file would read it
    (``64`` an integer, ``true`` a boolean, ``null`` None) and merged again. Top-level
    numbers (``seed=3``) are typed by Snakemake already; a top-level string
    (``check_models=false``) is read the same way."""
    def typed(value):
        if isinstance(value, dict):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [typed(v) for v in value]
        if isinstance(value, str) and value:
            try:
                scalar = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            return value if isinstance(scalar, (dict, list)) else scalar
        return value

    def merge(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    # Snakemake types a top-level number (seed=3) but leaves a boolean a string (check_models=false)
    merge(config, {key: typed(value) for key, value in overrides.items() if isinstance(value, (dict, list, str))})


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file; a missing file, a file that is not UTF-8 or a syntax error is
    one line naming the file (and the line)."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
        config = yaml.safe_load(text)
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        line = text_line(err.object, err.start)
        raise ConfigError(f"config {path}, line {line} is not UTF-8 text (byte {err.object[err.start]:#x}): save the "
                          "file as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config {path}{where} is not valid YAML: {problem}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config {path} must be a mapping with an 'experiments' key")
    return config


def text_line(data: bytes, offset: int) -> int:
    """The 1-based line of byte ``offset`` in ``data``."""
    return data.count(b"\n", 0, offset) + 1


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    return validate_config(load_yaml(path))
