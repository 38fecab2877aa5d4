"""The spotting options every analysing command shares (:func:`mer_cli.options.add_spotting_arguments`), turned
into the spotter to run and its settings. Apart from :mod:`mer_cli.options` so that commands that take no
spotting options do not import the spotter and the spotting model's loader."""

from __future__ import annotations

import argparse
import logging

from engines.backends.base import ModelFileError
from engines.card import CardError
from engines.spotting_model import SpottingModel, default_spotting_model, load_spotting_model
from mer_analysis.spotting import SpotterOptions
from mer_cli.options import SPOTTING_OPTIONS
from mer_core.errors import UserError
from mer_core.options import OptionsError, replace_options

__all__ = ["spotter_options", "spotting_choice"]

log = logging.getLogger(__name__)


def spotter_options(args: argparse.Namespace) -> SpotterOptions:
    """SpotterOptions from the command line's spotting options (seconds); an option not given keeps the
    default. A name SpotterOptions lacks is an OptionsError (a renamed field cannot be dropped quietly); values
    the spotter refuses together (``--min-peak`` above the largest movement) are a UserError naming the option."""
    overrides = {field: getattr(args, dest) for dest, field in SPOTTING_OPTIONS.items()
                 if getattr(args, dest, None) is not None}
    try:
        return replace_options(SpotterOptions(), **overrides)
    except OptionsError:
        raise
    except ValueError as exc:
        message = str(exc)
        for dest, field in SPOTTING_OPTIONS.items():
            message = message.replace(field, "--" + dest.replace("_", "-"))
        raise UserError(f"bad spotting option: {message}") from None


def spotting_choice(args: argparse.Namespace) -> tuple[str, SpottingModel | None]:
    """Which spotter the run uses ("learned" or "rules") and the learned one's model (None: rules). A given
    model that cannot be loaded, or ``--spotter learned`` with no model anywhere, is a UserError."""
    choice, path = getattr(args, "spotter", "auto"), getattr(args, "spotting_model", None)
    if choice == "rules":
        if path is not None:
            log.warning("--spotting-model is not used with --spotter rules")
        return "rules", None
    if path is None and choice == "auto":
        model = default_spotting_model()
        return ("learned", model) if model is not None else ("rules", None)
    try:
        return "learned", load_spotting_model(path)
    except (ModelFileError, CardError) as exc:
        if path is None:
            raise UserError("--spotter learned needs a spotting model and none is bundled: train one with "
                            "mer-train spot and give it with --spotting-model PATH") from None
        raise UserError(str(exc)) from None
