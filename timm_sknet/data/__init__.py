"""Images and labels for the tools around the models: the one image decoder (:mod:`.images`), class names and
top-k (:mod:`.labels`), the synthetic shapes data set (:mod:`.synthetic`) and int8 calibration images
(:mod:`.calibration`).
"""
