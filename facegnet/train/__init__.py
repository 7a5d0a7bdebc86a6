"""Training GhostNet face models: data (:mod:`.data`), teacher distillation (:mod:`.distill`), the trainer
(:mod:`.trainer`), dev-pair evaluation (:mod:`.evaluate`), photo preparation (:mod:`.prepare`) and export of
a checkpoint as shippable weights with a model card (:mod:`.export`).

Nothing here is imported by the inference path; import the submodules you need, e.g.
``from facegnet.train.trainer import TrainConfig, train``.
"""
