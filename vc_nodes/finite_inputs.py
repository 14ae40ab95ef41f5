"""Every FLOAT input of the pack's nodes must be a finite number, every choice one of its options.

ComfyUI checks a widget value against its declared min/max with `<` and `>`, which NaN passes (every comparison
with NaN is false), and its JSON parser reads NaN and Infinity: an API prompt with cfg NaN sampled a black video.
`install_input_checks` gives a node class a validate_inputs over its FLOAT inputs that refuses NaN and ±inf when
the prompt is queued, naming the node's input and its range. Naming an input in validate_inputs makes ComfyUI skip
its own min/max check of that input, so the range is checked here as well. A value linked from another node is None
at validation: `check_finite` checks it where it is used (the sampler, before sampling).

It also checks the node's COMBO inputs against their choices: ComfyUI 0.3.75 checks a choice only for an input
declared the V1 way (a list as its type) and lets any value through to a V3 node's combo ("COMBO" with options),
so a wrong name would reach the node; 0.33 checks both. The choices are read when the prompt is validated (file lists
change while the server runs).
"""
import inspect
import math


def inputs_of_type(spec, kind):
    """{input name: widget options} of the inputs of type `kind` in INPUT_TYPES' `spec`."""
    return {name: (value[1] if len(value) > 1 else {}) for section in ("required", "optional")
            for name, value in spec.get(section, {}).items() if value[0] == kind}


def float_inputs(node_class):
    """{input name: widget options} of the node's FLOAT inputs."""
    return inputs_of_type(node_class.INPUT_TYPES(), "FLOAT")


def choice_error(name, value, options):
    """The message for a COMBO input's value that is not one of its choices, or None."""
    choices = options.get("options", [])
    if value is None or value in choices:
        return None
    listed = ", ".join(repr(c) for c in choices[:20]) + (f" ... ({len(choices)} in all)" if len(choices) > 20 else "")
    return f"{name} {value!r} is not one of its choices: {listed or 'none (its folder is empty)'}."


def own_validation(node_class):
    """The node's own validate_inputs (bound to it), or None when it keeps the base class's (which validates
    nothing)."""
    for klass in node_class.__mro__:
        if klass.__module__.startswith("comfy_api"):  # reached io.ComfyNode: no override
            return None
        if "validate_inputs" in vars(klass):
            return getattr(node_class, "validate_inputs")
    return None


def float_error(name, value, options):
    """The message for a FLOAT input's value outside its declared range or not finite, or None."""
    if value is None:
        return None
    if not math.isfinite(value):
        low, high = options.get("min", "-inf"), options.get("max", "inf")
        return f"{name} is {value}: give a finite number (between {low} and {high})."
    if "min" in options and value < options["min"] or "max" in options and value > options["max"]:
        return f"{name} {value} is outside {options.get('min', '-inf')}..{options.get('max', 'inf')}."
    return None


def check_finite(**values):
    """At run time, for values that may have come through a link: a ValueError naming the input (ComfyUI's error
    names the node)."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} is {value} (from a linked node): give a finite number.")


def install_input_checks(node_class):
    """Install the check on `node_class` (keeping a validate_inputs it has: it runs after, with its own inputs)."""
    floats = float_inputs(node_class)
    combos = list(inputs_of_type(node_class.INPUT_TYPES(), "COMBO"))
    own = own_validation(node_class)
    if getattr(own, "finite_floats", None) is not None:  # inherited from a class installed before
        if set(own.finite_floats) == set(floats) and set(own.combos) == set(combos):
            return
        own = own.own
    if not floats and not combos:
        return
    own_inputs = inspect.getfullargspec(own).args[1:] if own is not None else []

    def validate(cls, **values):
        for name, options in floats.items():
            error = float_error(name, values.get(name), options)
            if error:
                return error
        declared = inputs_of_type(cls.INPUT_TYPES(), "COMBO") if combos else {}
        for name in combos:
            error = choice_error(name, values.get(name), declared.get(name, {}))
            if error:
                return error
        return own(**{name: values.get(name) for name in own_inputs}) if own is not None else True

    # ComfyUI reads the inputs a validate_inputs takes from its signature (inspect.getfullargspec) and hands it
    # exactly those: the signature names them
    names = dict.fromkeys([*own_inputs, *floats, *combos])
    validate.__signature__ = inspect.Signature(
        [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for name in names])
    validate.finite_floats, validate.combos, validate.own = floats, combos, own
    node_class.validate_inputs = classmethod(validate)
