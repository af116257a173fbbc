"""Score models: one class per kind, found by name in a registry.

A score model kind (``exact``, ``empirical``, ``unet``, ``mlp``, ``external``, or a
plugin's) declares, as class attributes and class methods:

- ``name``: the name in an experiment's ``scores`` list (and the ``{score}`` wildcard);
- ``block``: the experiment's config block holding its settings (None: no settings), and
  for a plugin ``schema``, the JSON Schema of that block;
- ``sampler``: the sampler block that samples it (``sampler`` or ``network_sampler``);
- ``needs``: the data kind it requires (``solvable``, ``images``) or None;
- ``network``: whether it is evaluated as a network (on the config's ``device``, a batch
  at a time), and ``trainable``: whether the workflow trains it (the ``train`` rule and the
  memorisation study's weight snapshots);
- :meth:`ScoreModel.spec`: the one parameter the rules pass to a job (plain values);
- :meth:`ScoreModel.inputs`: the files it reads besides the data (a checkpoint, a model folder);
- :meth:`ScoreModel.check`: its rules of the config that a schema cannot say;
- :meth:`ScoreModel.build`: in the job, the score object (the interface
  ``score(x: (B, d), t: float) -> (B, d)`` of :mod:`diffusion_regimes.scores`);
- trainable kinds: :meth:`ScoreModel.build_network` (the raw network) and
  :meth:`ScoreModel.input_shape`.

The workflow asks :func:`score_kind` for a kind and never branches on a score's name.
Adding a kind is one class registered with :func:`register`: a built-in one in a module of
this package, a user's one in a module named by the config's ``plugins`` list (the same
list as the data models').

This module does not import torch (the configuration layer and the DAG use it); the
classes import what they build inside :meth:`ScoreModel.build`.
"""

from __future__ import annotations

import contextvars
import re
from typing import Any, ClassVar

from ..errors import ConfigError, InputError
from ..paths import MODEL
from ..registry import Registry

#: data kinds a score model may require (those of the data models)
DATA_KINDS = ("solvable", "images")
#: how a message names each data kind
NEEDS = {"solvable": "a solvable data model", "images": "image data"}
#: the two sampler blocks of an experiment
#: whether validation reads the files of models kept outside the project (the config's
#: ``check_models``; a kind's :meth:`ScoreModel.check` skips them when False)
MODEL_FILES: contextvars.ContextVar[bool] = contextvars.ContextVar("model_files", default=True)
SAMPLER_BLOCKS = ("sampler", "network_sampler")


def sampler_settings(cfg: dict) -> dict:
    """The keys of a sampler block that matter (``T`` and ``t_end`` do not on the ddpm grid)."""
    return {k: v for k, v in cfg.items() if cfg["grid"] != "ddpm" or k not in ("T", "t_end")}


def config_error(where: str, what: str) -> ConfigError:
    """The one-line config error of a key."""
    return ConfigError(f"config error at {where}: {what}; see config/README.md")


def needs_message(cls: type[ScoreModel], data_kind: str) -> str:
    """Why a score model cannot run on data of ``data_kind``."""
    hint = " (use 'mlp' for vectors)" if cls.needs == "images" else ""
    return f"{cls.name!r} needs {NEEDS[cls.needs]}, not {data_kind} data{hint}"


class ScoreModel:
    """A kind of score model (class attributes and class methods only: no instances)."""

    name: ClassVar[str]
    block: ClassVar[str | None] = None
    schema: ClassVar[dict | None] = None
    sampler: ClassVar[str] = "sampler"
    needs: ClassVar[str | None] = None
    network: ClassVar[bool] = False
    trainable: ClassVar[bool] = False
    #: the likely cause when its score is NaN or inf (the one-line error says it)
    nonfinite_hint: ClassVar[str] = "the score model is broken"
    #: whether its score runs code from outside the project (an entry point, a downloaded
    #: model): an exception it raises is then one line naming the model, not a traceback
    user_code: ClassVar[bool] = False
    #: whether an experiment may hold several models of the kind, named ``{name}_{label}``
    #: (:meth:`variant`); ``label`` is that of a variant, None for the kind itself
    labelled: ClassVar[bool] = False
    label: ClassVar[str | None] = None

    @classmethod
    def variant(cls, label: str) -> type[ScoreModel]:
        """Of a labelled kind: the same kind under the name ``{name}_{label}`` (its own score
        name, results folder and settings), made once per label."""
        key = (cls, label)
        if key not in _VARIANTS:
            _VARIANTS[key] = type(f"{cls.__name__}_{label}", (cls,),
                                  {"name": f"{cls.name}_{label}", "label": label, "__module__": cls.__module__})
        return _VARIANTS[key]

    # --- torch-free: the workflow and the configuration layer
    @classmethod
    def settings(cls, exp_cfg: dict) -> Any:
        """Its settings in an experiment's config (its ``block``), None without one."""
        return exp_cfg[cls.block] if cls.block else None

    @classmethod
    def spec(cls, exp_cfg: dict, device: str) -> dict:
        """The score model of an experiment as plain values, the one parameter of the jobs that
        sample it: ``kind``, ``settings``, ``sampler`` (the settings of its sampler block that
        matter) and ``device`` (None for kinds that are not networks); and ``provenance`` for
        kinds whose model lives in files of their own (:meth:`provenance`)."""
        spec = {"kind": cls.name, "settings": cls.settings(exp_cfg),
                "sampler": sampler_settings(exp_cfg[cls.sampler]), "device": device if cls.network else None}
        found = cls.provenance(exp_cfg)
        if found is not None:
            spec["provenance"] = found
        return spec

    @classmethod
    def training_data(cls, settings: Any) -> dict | None:
        """The data its model records it was trained on (``source``, ``source_index``: positions
        in the source), where it records them; None otherwise (the workflow's own networks are
        trained on the experiment's subset)."""
        return None

    @classmethod
    def provenance(cls, exp_cfg: dict) -> dict | None:
        """What identifies the model measured, for the metadata of every table written for it
        and the summary (``id``: one line of it): None when the config says it all."""
        return None

    @classmethod
    def inputs(cls, exp: str, exp_cfg: dict) -> dict[str, str | list[str]]:
        """Files it reads besides the data, by name (a change of them re-runs what uses it)."""
        return {}

    @classmethod
    def check(cls, where: str, exp_cfg: dict, data_kind: str) -> None:
        """Config rules a schema cannot say; ``where`` names the experiment (``experiments.x``)."""
        if cls.needs and data_kind != cls.needs:
            raise config_error(f"{where}.scores", needs_message(cls, data_kind))

    # --- in the jobs (may import torch)
    @classmethod
    def build(cls, spec: dict, x, data_model, files: dict):
        """The score object for the subset x (n, d) of ``data_model``, with ``files`` the paths
        of :meth:`inputs` (as the job received them)."""
        raise NotImplementedError

    @classmethod
    def input_shape(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Trainable kinds: one sample's shape as the raw network takes it, from the data's."""
        raise ValueError(f"score model {cls.name!r} is not a network trained here")

    @classmethod
    def build_network(cls, settings: dict, shape: tuple[int, ...]):
        """Trainable kinds: a raw noise-predicting network ``net(x: (B, *shape), c_noise: (B,))``."""
        raise ValueError(f"score model {cls.name!r} is not a network trained here")


class TrainedNetwork(ScoreModel):
    """A noise-predicting network trained by the workflow (its checkpoint is ``models/{score}.pt``)."""

    sampler = "network_sampler"
    network = True
    trainable = True
    nonfinite_hint = "its training may have diverged: see its loss log, lower train.lr and train it again"

    @classmethod
    def inputs(cls, exp: str, exp_cfg: dict) -> dict[str, str | list[str]]:
        return {"model": MODEL.format(exp=exp, score=cls.name)}

    @classmethod
    def build(cls, spec: dict, x, data_model, files: dict):
        from ..networks import NetworkScore, load_network

        sampler = spec.get("sampler") or {}
        return NetworkScore(load_network(files["model"]), sampler.get("batch_size", 512), spec.get("device") or "auto",
                            sampler.get("precision", "fp32"))


def _check_declaration(cls: type[ScoreModel]) -> None:
    if cls.sampler not in SAMPLER_BLOCKS:
        raise TypeError(f"score model {cls.__name__}: sampler {cls.sampler!r} is not one of {SAMPLER_BLOCKS}")
    if cls.needs is not None and cls.needs not in DATA_KINDS:
        raise TypeError(f"score model {cls.__name__}: needs {cls.needs!r} is not one of {DATA_KINDS}")


_registry = Registry("score model", "score model", __name__, __path__, _check_declaration)
#: name -> score model class
REGISTRY: dict[str, type[ScoreModel]] = _registry.classes
#: class decorator: add a score model kind to the registry under ``cls.name``
register = _registry.register


#: (kind, label) -> the variant class of a labelled kind
_VARIANTS: dict[tuple[type, str], type[ScoreModel]] = {}
#: the label of a variant's name, ``{kind}_{label}``
LABEL = "[A-Za-z0-9]+"


def score_kind(name: str) -> type[ScoreModel]:
    """The score model class registered under ``name``, or the variant ``{kind}_{label}`` of a
    labelled kind."""
    try:
        return _registry.get(name)
    except InputError:
        for kind, cls in _registry.all().items():
            if cls.labelled and re.fullmatch(f"{re.escape(kind)}_({LABEL})", name):
                return cls.variant(name[len(kind) + 1:])
        raise


def name_pattern() -> str:
    """A regular expression of every score model name: the registered ones and the variants of
    the labelled kinds (the workflow's ``{score}`` wildcard)."""
    kinds = registered_kinds()
    return "|".join([f"{re.escape(n)}_{LABEL}" for n, c in kinds.items() if c.labelled] + list(kinds))


def registered_kinds() -> dict[str, type[ScoreModel]]:
    """Every registered score model (the built-in ones and the plugins loaded so far)."""
    return _registry.all()


def trainable_kinds() -> list[str]:
    """Names of the kinds the workflow trains."""
    return [name for name, cls in registered_kinds().items() if cls.trainable]


def score_spec(exp_cfg: dict, name: str, device: str) -> dict:
    """The spec (:meth:`ScoreModel.spec`) of score model ``name`` of an experiment."""
    return score_kind(name).spec(exp_cfg, device)


class CheckedScore:
    """A score whose every result is checked: a result that is not one value per coordinate
    of each state (a shape that merely broadcasts included), or holds a NaN or inf, stops the
    job with one line naming the score model, the OU time and the likely cause, before it can
    become a number in a table; so does an exception of a ``user_code`` model. Everything else
    (``nearest``, ``device``, ...) is the wrapped score's; ``unchecked`` is the wrapped score
    itself."""

    def __init__(self, unchecked, name: str, hint: str, user_code: bool = False):
        self.unchecked, self.name, self.hint, self.user_code = unchecked, name, hint, user_code

    def _checked(self, call, x, t: float, what: str):
        try:
            out = call(x, t)
        except InputError:
            raise
        except Exception as err:
            if not self.user_code:
                raise
            text = (str(err).strip().splitlines() or [""])[0][:160]
            raise InputError(f"score model {self.name!r} raised {type(err).__name__} at OU time {t:.4g} ({text}): "
                             f"{self.hint}") from None
        shape = getattr(out, "shape", None)
        if shape is None or tuple(shape) != tuple(x.shape):
            got = f"shape {tuple(shape)}" if shape is not None else f"a {type(out).__name__}"
            raise InputError(f"score model {self.name!r} returned {what} of {got} for states of shape "
                             f"{tuple(x.shape)} at OU time {t:.4g}: it must return a tensor of the states' shape "
                             "(one value per coordinate of each state; a shape that only broadcasts is refused)")
        finite = out.isfinite()
        if not bool(finite.all()):
            rows = int((~finite.reshape(len(out), -1)).any(1).sum())
            raise InputError(f"score model {self.name!r} returned NaN or inf {what} at OU time {t:.4g} for {rows} "
                             f"of {len(out)} states: {self.hint}")
        return out

    def __call__(self, x, t: float):
        return self._checked(self.unchecked, x, t, "scores")

    def __getattr__(self, attr: str):
        value = getattr(self.unchecked, attr)
        if attr == "eps":  # a network's noise prediction, checked as well
            return lambda x, t: self._checked(value, x, t, "noise predictions")
        return value


def build_score(spec: dict, x, data_model, files: dict) -> CheckedScore:
    """The score object of a spec (:meth:`ScoreModel.build`), checked for NaN and inf
    (:class:`CheckedScore`): the one factory of the jobs."""
    kind = score_kind(spec["kind"])
    return CheckedScore(kind.build(spec, x, data_model, files), spec["kind"], kind.nonfinite_hint, kind.user_code)
