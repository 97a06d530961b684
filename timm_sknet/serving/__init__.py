"""The HTTP service: the FastAPI app (:mod:`.app`) and running it with uvicorn (:mod:`.server`).

``pip install "timm-sknet[serve]"``; ``timm-sknet serve`` runs it (docs/serving.md).
"""
