"""Screening before training (issue 12): propose K candidates, rank them cheaply with zero-cost
proxies or an online surrogate, train only the best.

``options`` (the ``screening:`` config section), ``batch`` (the label-free inputs the proxies
see), ``features`` (fixed-width derivation features), ``surrogate`` (the learned regressor),
``screen`` (the ranking itself) and ``picker`` (which of a slot's K candidates the search
trains) each do one part; a strategy needs only the names below.
"""

from .batch import screening_batch
from .options import ScreeningOptions
from .picker import CandidatePicker, search_picker
from .screen import Ranked, Screener, Screening

__all__ = ["CandidatePicker", "Ranked", "ScreeningOptions", "Screener", "Screening",
           "screening_batch", "search_picker"]
