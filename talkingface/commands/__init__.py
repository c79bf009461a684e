"""The ``talkingface`` command: the dispatcher (:mod:`.main`, also ``python -m talkingface``) and the subcommands,
one module each: its argument parser and its ``main``.

    lipsync     talkingface.commands.lipsync      (also demo.py)
    preprocess  talkingface.commands.preprocess   (also python -m talkingface.preprocess)
    train       talkingface.commands.train        (also trainer/DiffTalkTrainer.py)
    export      talkingface.commands.export       (also python -m talkingface.training.export)
    cache       talkingface.commands.cache        (also python -m talkingface.training.latent_cache)
    evaluate    talkingface.commands.evaluate     (also python -m talkingface.evaluate)
    synthetic   talkingface.commands.synthetic    (also python -m talkingface.synthetic)
    app         talkingface.commands.app

Each ``main(argv) -> int`` is wrapped in :func:`talkingface.cli_support.command`, the one place where errors become
the ``error: <file or flag>: <problem>`` line and the exit status. The commands sit above every other package: they
parse, then call the library.
"""
