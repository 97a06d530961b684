"""Training and fine-tuning with timm's parts: the job and its epoch loop (:mod:`.job`), its parts (:mod:`.parts`),
its options (:mod:`.arguments`) and its checkpoints (:mod:`.checkpoint`). ``timm-sknet train`` runs it.
"""
