"""The cloud entry points, one idea a module: scheduled runs from environment variables and a trigger's event.

The platform entries are :mod:`.aws_lambda` (``lambda_handler``), :mod:`.functions` (Cloud Functions' HTTP and
CloudEvent handlers) and :mod:`.container` (the container image's Lambda runtime start); they share the core,
:func:`.run.run_scheduled`, which reads the event (:mod:`.event`), the environment (:mod:`.env`, :mod:`.options`,
:mod:`.connection`, :mod:`.secrets`), keeps to the time budget (:mod:`.budget`), runs one job (:mod:`.account_backup`,
:mod:`.stream_backup`, :mod:`.prune`, :mod:`.verify`, :mod:`.drill`) and reports it (:mod:`.report`).
``pipeline.entry.handlers`` re-exports the entry names deployments use. Nothing here imports the CLI.
"""
