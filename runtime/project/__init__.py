"""Projects: a folder with ``modrpc.toml``, its modules, and its generated code.

- :func:`find_project` finds the project a command works on (``--project`` or the working
  directory upwards); :meth:`Project.enter` makes its code the code that is imported.
- :func:`new_project` and :func:`new_module` start a project or add a module (``modrpc new``).
"""

from runtime.project._root import Project, ProjectError, find_project
from runtime.project._scaffold import new_module, new_project

__all__ = ["Project", "ProjectError", "find_project", "new_module", "new_project"]
