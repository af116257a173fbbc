"""Stages of ``workflow/rules/models.smk``: the trained score networks and the classifier."""

from __future__ import annotations

import logging

import torch

from ..classifier import save_classifier, train_classifier
from ..data import image_shape, load_subset
from ..errors import InputError
from ..io import make_metadata, write_table
from ..models import count_parameters, network_input_shape
from ..networks import save_network
from ..seeding import Stream, derive_seed
from ..training import network_from_snapshot, train_network, training_results

log = logging.getLogger("diffusion_regimes")


def input_shape(arch: str, meta: dict, data: str) -> tuple[int, ...]:
    """One sample's shape as the network ``arch`` takes it (one line if the data do not fit)."""
    try:
        return network_input_shape(arch, tuple(meta["shape"]))
    except ValueError as err:
        raise InputError(f"{data}: {err}") from None


def train(input: dict, output: dict, exp: str, arch: str, model: dict, train: dict, seed: int, state: str,
          device: str = "auto", options: dict | None = None, progress: bool = True) -> None:
    """Train the network of the trainable score model ``arch`` on a subset; ``model`` is its
    config block; ``options`` the train block's run options (from the config, not parameters:
    they change no result beyond rounding). With an input ``snapshot`` (the memorisation
    study's last weight snapshot, at the configured steps) the network is that snapshot's."""
    if "snapshot" in input:
        net, loss_log, results = network_from_snapshot(input["snapshot"], train["steps"])
    else:
        x, _, meta = load_subset(input["data"])
        net, loss_log, info = train_network(x, arch, model, input_shape(arch, meta, input["data"]), train,
                                            derive_seed(seed, exp, Stream.TRAIN), state, progress, device,
                                            options=options)
        results = training_results(net, loss_log, info)
    metadata = make_metadata("train", {"model": model, "train": train}, seed, results)
    write_table(loss_log, output["log"], metadata)
    save_network(net, arch, model, metadata, output["model"])
    log.info("train %s: %d parameters, final loss %.4f, %d steps", arch, results["parameters"],
             results["final_loss"], results["steps"])


def classifier(input: dict, output: dict, exp: str, classifier: dict, seed: int, device: str = "auto",
               progress: bool = True) -> None:
    """The classifier of an image experiment, trained on the training and held-out images."""
    x, labels, meta = load_subset(input["data"])
    if "reference" in input:  # the held-out images are no model's training data, but the classifier may use them
        xr, lr, _ = load_subset(input["reference"])
        x, labels = torch.cat([x, xr]), torch.cat([labels, lr])
    shape = image_shape(meta)
    net, acc, n_test = train_classifier(x, labels, shape, classifier, derive_seed(seed, exp, Stream.CLASSIFIER),
                                        progress, device)
    results = {"accuracy": acc, "n_test": n_test, "parameters": count_parameters(net), "arch": classifier["arch"]}
    save_classifier(net, classifier, shape, acc, make_metadata("classifier", classifier, seed, results),
                    output["classifier"])
    log.info("classifier %s: held-out accuracy %.4f on %d images", classifier["arch"], acc, n_test)
