"""einspace.tasks: Unseen-NAS-style tasks, the Unseen-NAS file format and training recipes.

Importing this package registers every built-in task, one module per task named as the task (a
task's data source is imported only when it is generated), so ``registry.get_task(name)`` and
``handle.resolve_task(spec)`` work without the caller remembering to import anything else.  A new
built-in task is one module that calls ``register_task``, named in ``BUILTIN_TASK_MODULES``.
"""

from importlib import import_module

from .handle import Task, resolve_task
from .registry import TaskError, TaskSpec, get_task, list_tasks, register_task

#: The modules that register the built-in tasks, in the order ``einspace tasks list`` shows them.
BUILTIN_TASK_MODULES = ("chesseract_wdl", "darcy_lite", "addnist_lite", "multnist_lite",
                        "fashiontile", "gutenberg_lite", "language_lite", "mnist1d",
                        "era_pianoroll")

for _module in BUILTIN_TASK_MODULES:
    import_module(f"{__name__}.{_module}")

__all__ = ["BUILTIN_TASK_MODULES", "Task", "TaskError", "TaskSpec", "get_task", "list_tasks",
           "register_task", "resolve_task"]
