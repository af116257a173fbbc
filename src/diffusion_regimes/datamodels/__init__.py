"""Data models: one class per data source, found by name in a registry.

A data model knows how to make its subset (:meth:`DataModel.sample`) and, built
from the subset's metadata, everything the stages need that depends on the
source: its exact score and closed-form classes (solvable models), extra levels of
class agreement, its theory columns and population Lambda, the paper's Lambda for
Table 1. Stages look a model up by the ``source`` of the config or the metadata;
none of them tests a source by name.

Adding a data model is one class, registered with :func:`register`, plus its
entry in the config schema (``$defs/datasets`` of ``schemas/config.schema.yaml``,
with ``x-kind``): a built-in one in a module of this package (every module here
is imported when a model is first looked up), a user's one in a module named by
the config's top-level ``plugins`` list, whose class carries its schema entry as
``schema`` (see ``docs/design.md``).

This module does not import torch, so the configuration layer can load plugins.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from ..registry import Registry

#: the kinds of data model: ``solvable`` (vectors with an exact score, closed-form
#: classes and theory) and ``images`` (image files; classes from a trained classifier)
KINDS = ("solvable", "images")


@dataclass
class Subset:
    """What :meth:`DataModel.sample` makes: ``x`` (n, d) float32 tensor, ``labels`` (n,)
    int64 classes, ``source_index`` (n,) int64 positions in the source, and ``meta``
    (at least ``shape``, ``mean``, ``classes``, ``source`` and the model's parameters).
    ``reference``: a set the models never see, for the null of memorisation (image
    sources: their held-out split, empty when ``dataset.holdout`` is 0); None for solvable
    sources, whose reference is a fresh draw of the population."""

    x: Any
    labels: np.ndarray
    source_index: np.ndarray
    meta: dict
    reference: Subset | None = None


class DataModel:
    """A data source. Class attributes: ``name`` (the config's ``dataset.source``),
    ``kind`` (one of :data:`KINDS`), ``schema`` (a plugin's schema entry, else None).
    Instances are built from a subset's metadata: ``DataModel(meta)``."""

    name: ClassVar[str]
    kind: ClassVar[str]
    schema: ClassVar[dict | None] = None

    def __init__(self, meta: dict):
        self.meta = meta

    # --- making the data
    @classmethod
    def sample(cls, dataset: dict, generator) -> Subset:
        """The subset of a config ``dataset`` block, drawn with ``generator``."""
        raise NotImplementedError

    @classmethod
    def planned_shape(cls, dataset: dict) -> tuple[int, ...]:
        """Shape of one sample that :meth:`sample` will make, without reading data."""
        return (int(dataset["d"]),)

    # --- score and classes
    def exact_score(self):
        """The exact score of the population (solvable models)."""
        raise InputError(f"source {self.name!r} has no exact score: use the empirical or a network score")

    def classify(self, x):
        """Closed-form class (B,) int64 of final samples x (B, d): solvable models must give it
        (image sources' classes come from a trained classifier)."""
        raise InputError(f"source {self.name!r} has no closed-form classes: a solvable data model must "
                         "define classify(x)")

    def agreement_levels(self, trunk: np.ndarray, clone: np.ndarray) -> dict[str, np.ndarray]:
        """Extra levels of class agreement for cloning: name -> (K, P) bool, from the trunk
        labels (P,) and the clone labels (K, P). None by default."""
        return {}

    # --- theory
    def theory(self, t: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        """Closed-form columns on OU times t (``phi``, ``f`` and any extra, NaN where there
        is none) and scalar results (``t_C``, ``Lambda_population``, ...)."""
        nan = np.full_like(t, np.nan)
        return {"phi": nan, "f": nan}, {}

    def speciation_time(self, Lambda: float) -> float:
        """The t_S that branch times in units of t_S refer to and that the measured t_S is
        compared with: ``1/2 log Lambda`` (Lambda: the spectrum's top eigenvalue), unless the
        model's classes speciate otherwise (``covariance_mixture``: by their covariance)."""
        from ..schedule import speciation_time

        return speciation_time(Lambda)

    #: what :meth:`speciation_time` is, for the metadata
    speciation_rule: ClassVar[str] = "1/2 log Lambda"

    def reference_lambda(self) -> float | None:
        """Lambda of the paper's Table 1 for this data set and size, where it has one."""
        return None


def _check_kind(cls: type[DataModel]) -> None:
    if cls.kind not in KINDS:
        raise TypeError(f"data model {cls.__name__}: kind {cls.kind!r} is not one of {KINDS}")


_registry = Registry("data model", "dataset source", __name__, __path__, _check_kind)
#: name -> data model class
REGISTRY: dict[str, type[DataModel]] = _registry.classes
#: class decorator: add a data model to the registry under ``cls.name``
register = _registry.register


def data_model(source: str) -> type[DataModel]:
    """The data model class registered under ``source``."""
    return _registry.get(source)


def for_meta(meta: dict) -> DataModel:
    """The data model of a subset, from its metadata (``meta['source']``)."""
    return data_model(meta["source"])(meta)


def registered_models() -> dict[str, type[DataModel]]:
    """Every registered data model (the built-in ones and the plugins loaded so far)."""
    return _registry.all()


#: plugin spec (as the config names it) -> the name of its imported module
PLUGIN_MODULES: dict[str, str] = {}


def load_plugins(specs: list[str]) -> list[type[DataModel]]:
    """Import the plugin modules named in the config (a module name, or the path of a
    ``.py`` file relative to the working directory) and return the data models they
    register (each must carry its ``schema`` entry)."""
    found = []
    for spec in specs:
        try:
            if spec.endswith(".py"):
                path = Path(spec).resolve()
                name = f"diffusion_regimes_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
                if name not in sys.modules:
                    loader = importlib.util.spec_from_file_location(name, path)
                    if loader is None or not path.exists():
                        raise FileNotFoundError(path)
                    module = importlib.util.module_from_spec(loader)
                    sys.modules[name] = module
                    try:
                        loader.loader.exec_module(module)
                    except BaseException:
                        del sys.modules[name]
                        raise
                module = sys.modules[name]
            else:
                module = importlib.import_module(spec)
        except (ImportError, FileNotFoundError, SyntaxError) as err:
            raise InputError(f"plugins: cannot import {spec!r} ({type(err).__name__}: {err}); give a module "
                             "on the Python path or the path of a .py file") from None
        except TypeError as err:  # register() refused a class (a name taken, an unknown kind)
            raise InputError(f"plugins: {spec!r}: {err}") from None
        except Exception as err:  # the plugin's own code failed while it was imported
            raise InputError(f"plugins: importing {spec!r} failed ({type(err).__name__}: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})") from None
        PLUGIN_MODULES[spec] = module.__name__  # its score models (scoremodels registry) are found by module
        new = [cls for cls in REGISTRY.values() if cls.__module__ == module.__name__]
        for cls in new:
            if not isinstance(cls.schema, dict):
                raise InputError(f"plugins: data model {cls.name!r} of {spec!r} has no schema entry "
                                 "(a class attribute 'schema', a JSON Schema object for its dataset block)")
        found += new
    return found
