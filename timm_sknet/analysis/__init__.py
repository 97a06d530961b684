"""The paper's analyses: recording SK attention per unit (:mod:`.attention`) and attention against object scale
(:mod:`.scale`). ``timm-sknet attention`` and the main job run them.
"""
