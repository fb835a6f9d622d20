"""One run, in the order it happens: :mod:`~transferkit.pipeline.data` -> :mod:`~transferkit.pipeline.model` ->
:mod:`~transferkit.pipeline.train` -> :mod:`~transferkit.pipeline.choose` -> :mod:`~transferkit.pipeline.report`,
driven by :mod:`~transferkit.pipeline.run` (``fit``); :mod:`~transferkit.pipeline.resume` says what a resume may
change. :mod:`transferkit.experiment` re-exports the entry points."""
