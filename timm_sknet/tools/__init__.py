"""Tools built on the models: the ``timm-sknet`` command, training, the benchmark against timm, attention
recording and the paper's scale analysis, the offline main job, the synthetic shapes data set.

``import timm_sknet`` never imports this package; each tool is imported when it is used.
"""
