"""The world's zoos in and out: folders of anyone's checkpoints and the field's public zoos read
into the zoo format (``wsl zoo import``), and zoos written back out as plain torch files
(``wsl zoo export``).

Every reader yields ``ImportedRun`` records (``wsl.interchange.records``): one run's checkpoints as
tensors under its own parameter names, with its metrics, hyperparameters and signal fields. One
writer turns them into a zoo file, so every format shares the same structural matching onto a
weight space, provenance, atomic and resumable writing, and errors.
"""
