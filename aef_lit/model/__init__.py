"""The model (chapters 4-14): timecodes, projectors, the STP encoder, summariser, vMF bottleneck, decoders.

Hand-written: the part's public API, re-exported from the generated modules.
"""
from aef_lit.model.aef import (  # noqa: F401
    AEF,
    MAX_DAYS,
    SATURATED_FRACTION,
    UNNORMALISED_SIGMA,
    EmbedInputError,
    EmbedInputWarning,
    Encoded,
    build_model,
    check_embed_inputs,
    embed,
)
