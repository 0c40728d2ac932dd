"""Programs that measure sharpbench itself: step cost per method (perf), the GPU acceptance check
(acceptance: throughput, packing, an end-to-end smoke), Ray Tune overhead, slot utilization, search
strategies. Each prints figures and asserts nothing; they sit above :mod:`bench.search` and use
the instruments of :mod:`bench.measure`."""
