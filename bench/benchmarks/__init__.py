"""Programs that measure sharpbench itself: step cost per method (perf), Ray Tune overhead,
slot utilization, search strategies. Each prints figures and asserts nothing; they sit above
:mod:`bench.search` and use the instruments of :mod:`bench.measure`."""
