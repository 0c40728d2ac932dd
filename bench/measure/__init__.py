"""Instruments: flatness of a trained model (Hessian eigenvalue, trace, sharpness) and timing
(clock, spreads, reliability). They measure what higher layers hand them and import nothing above
:mod:`bench.config`."""
