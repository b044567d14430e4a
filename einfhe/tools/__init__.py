"""Commands built on the library: `calibrate` (measure op prices for the cost model) and `demo` (`make demo`)."""
