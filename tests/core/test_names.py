"""The registry of choices: every closed set defined once in ``core.names``, one check, and the CLI's enums,
the API's ``Literal`` types and the tables keyed by a set all equal to it."""

from __future__ import annotations

import enum
import inspect
import typing

import pytest

from trusttrace.activations.extract import ExtractConfig
from trusttrace.cli import choices
from trusttrace.core import names
from trusttrace.core.errors import OptionError, UnknownChoiceError, UnknownNameError
from trusttrace.demo.plan import SIZES
from trusttrace.models.devices import DtypeName
from trusttrace.steering.interop import FORMATS

SETS = {name: value for name, value in vars(names).items() if isinstance(value, names.Choices)}


def test_every_set_is_named_for_what_it_holds():
    assert len(SETS) >= 19
    for name, choices_ in SETS.items():
        assert choices_.what and len(set(choices_)) == len(choices_) > 1, name


def test_the_check_names_the_value_lists_the_names_and_suggests_the_nearest():
    assert names.PROTOCOLS.check("cv") == "cv"
    with pytest.raises(UnknownChoiceError) as err:
        names.PROTOCOLS.check("group_cv")
    assert str(err.value) == "protocol 'group_cv' is not one of group-cv, cv, paper-code; did you mean 'group-cv'?"
    assert isinstance(err.value, UnknownNameError) and isinstance(err.value, OptionError)
    with pytest.raises(UnknownChoiceError, match=r"^--dtype 'fp64' is not one of auto, bfloat16, float16, float32\.$"):
        names.DTYPES.check("fp64")
    with pytest.raises(UnknownChoiceError, match=r"controls 'lexicon' .*did you mean 'lexical'\? Or none\.$"):
        names.CONTROLS.check_all(["shuffled", "lexicon"], "controls", hint="Or none.")
    with pytest.raises(UnknownChoiceError, match="not one of"):
        names.DIMENSIONS.check(None)  # not a string at all


@pytest.mark.parametrize("enum_type", [value for value in vars(choices).values()
                                       if inspect.isclass(value) and issubclass(value, enum.Enum)
                                       and value.__module__ == choices.__name__])
def test_every_cli_enum_is_a_registered_set(enum_type):
    (name,) = [name for name, value in choices.CHOICES.items() if value is enum_type]
    assert tuple(member.value for member in enum_type) == SETS[name]


def test_the_api_types_and_tables_keyed_by_a_set_hold_its_names():
    assert typing.get_args(DtypeName) == names.DTYPES
    batching = typing.get_type_hints(ExtractConfig)["batching"]
    assert typing.get_args(batching) == names.BATCHINGS
    assert tuple(FORMATS) == names.VECTOR_FORMATS
    assert tuple(SIZES) == names.DEMO_SIZES
