"""Tools shared by every task, run as ``python -m videomamba.tools.<name>``.

``generate_tensorboard``: rebuild TensorBoard events from any run's ``log.txt``. ``launch.sh`` (a
shell file beside them) is the launcher every experiment script sources.
"""
