"""Running commands and recording them: ``mlvc run`` (run.py) plans each run (plan.py),
runs and records one command (execute.py) in the environment it asks for (interpreter.py,
venv.py for ``mlvc reproduce --env recorded``)."""
