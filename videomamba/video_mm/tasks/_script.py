"""Makes the repository importable when a task file is run as a script (``python videomamba/video_mm/tasks/x.py``)."""

import os
import sys

_tasks_dir = os.path.dirname(os.path.abspath(__file__))
# The script's own folder goes first on sys.path; drop it so its modules cannot shadow packages.
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _tasks_dir]
_repo_root = os.path.dirname(os.path.dirname(os.path.dirname(_tasks_dir)))
if _repo_root not in sys.path:
    sys.path.insert(0, _repo_root)
