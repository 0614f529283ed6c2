"""The ``monitor`` subcommands, a module per family: each adds its subcommands' parsers
(``add_*``) with a ``run`` function that carries the command out.

They import only the standard library at the top, and what a command drives (numpy,
OpenCV, ZeroMQ, Qt, the simulator) inside its ``run``: ``monitor --help`` and every
command start without loading what they do not use. That is why the commands live here
rather than in the modules they drive, which import those libraries at their top.

- ``options``: argument types and options several commands share
- ``recordings``: simulate, simulate-grid, info
- ``streaming``: demo, replay, grab
- ``attached``: view, igtl, analyze, keys
- ``training``: train
- ``calibration``: calibrate
- ``qa``: audit, export
- ``benchmarks``: bench
- ``alarms``: sounds
"""
