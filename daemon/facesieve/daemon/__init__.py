"""The daemon behind `facesieve watch`: the `guard` (signals, systemd, the main loop), the
single `worker` that holds the models, and its `notify` and `metrics` channels."""
