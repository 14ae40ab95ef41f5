"""Every FLOAT input of the pack's nodes must be a finite number.

ComfyUI checks a widget value against its declared min/max with `<` and `>`, which NaN passes (every comparison
with NaN is false), and its JSON parser reads NaN and Infinity: an API prompt with cfg NaN sampled a black video.
`require_finite_floats` gives a node class a VALIDATE_INPUTS over its FLOAT inputs that refuses NaN and ±inf when
the prompt is queued, naming the node's input and its range. Naming an input in VALIDATE_INPUTS makes ComfyUI skip
its own min/max check of that input, so the range is checked here as well. A value linked from another node is None
at validation: `check_finite` checks it where it is used (the sampler, before sampling).
"""
import inspect
import math


def float_inputs(node_class):
    """{input name: widget options} of the node's FLOAT inputs."""
    spec = node_class.INPUT_TYPES()
    return {name: (value[1] if len(value) > 1 else {}) for section in ("required", "optional")
            for name, value in spec.get(section, {}).items() if value[0] == "FLOAT"}


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


def require_finite_floats(node_class):
    """Install the check on `node_class` (keeping a VALIDATE_INPUTS it has: it runs after, with its own inputs)."""
    floats = float_inputs(node_class)
    own = getattr(node_class, "VALIDATE_INPUTS", None)
    if getattr(own, "finite_floats", None) is not None:  # inherited from a class installed before
        if set(own.finite_floats) == set(floats):
            return
        own = own.own
    if not floats:
        return
    own_inputs = inspect.getfullargspec(own).args[1:] if own is not None else []

    def validate(cls, **values):
        for name, options in floats.items():
            error = float_error(name, values.get(name), options)
            if error:
                return error
        return own(**{name: values.get(name) for name in own_inputs}) if own is not None else True

    # ComfyUI reads the inputs a VALIDATE_INPUTS takes from its signature (inspect.getfullargspec) and hands it
    # exactly those: the signature names them
    names = dict.fromkeys([*own_inputs, *floats])
    validate.__signature__ = inspect.Signature(
        [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for name in names])
    validate.finite_floats, validate.own = floats, own
    node_class.VALIDATE_INPUTS = classmethod(validate)
