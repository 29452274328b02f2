"""trainables.loops: how a loop's reported numbers are kept."""

import math
import warnings

import numpy as np

from trainables.loops import as_computed


def test_a_metric_is_the_shortest_decimal_of_its_float32_and_a_float64_is_left_alone():
    assert as_computed(float(np.float32(0.98))) == 0.98 and float(np.float32(0.98)) != 0.98
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a diverged loss far beyond float32's range: no overflow warning
        assert as_computed(1e300) == 1e300 and as_computed(-1e300) == -1e300
    assert as_computed(0.1) == 0.1 and math.isnan(as_computed(math.nan)) and as_computed(math.inf) == math.inf
