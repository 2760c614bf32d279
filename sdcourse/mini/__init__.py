"""How the course's mini model is built: its architecture, tokenizer files, training and evaluation.

The course helpers (``sdcourse/*.py``) only *use* a Stable Diffusion pipeline; this subpackage *makes*
the small one that the course ships in ``sdcourse/mini_model/`` (the weights live there, not here):

* ``arch``: the sizes of its VAE, text encoder and UNet (SD v1.x's classes, smaller) and its scheduler;
* ``clip_vocab``: CLIP's tokenizer files, rebuilt from the vocabulary in the open-clip-torch wheel;
* ``train``: the training recipe, every stage, resumable (``python -m sdcourse.mini.train --out DIR``);
* ``evaluate``: a pixel-statistics checker that reads colour, shape, position and size off a picture,
  and the command that judges the model on captions it never saw (``python -m sdcourse.mini.evaluate``).

The pictures it learns from come from ``sdcourse/shapes.py``, which stays beside the course helpers
because the notebooks use it too.
"""
