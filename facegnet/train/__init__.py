"""Training GhostNet face models: the run's configuration (:mod:`.config`, recipes in ``recipes/*.toml``), training
faces (:mod:`.datasets`), augmentation (:mod:`.augment`), batch sampling (:mod:`.sampling`), teacher distillation
(:mod:`.distill`, :mod:`.teacher`), the trainer (:mod:`.trainer`), dev-pair evaluation (:mod:`.evaluate`), photo
preparation (:mod:`.prepare`) and export of a checkpoint as shippable weights with a model card (:mod:`.release`,
with the teacher fold of :mod:`.fold`).

Nothing here is imported by the inference path; import the submodules you need, e.g.
``from facegnet.train.trainer import TrainConfig, train``.
"""
