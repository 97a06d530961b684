"""Reading an upload: the multipart field ``file`` or the raw body, bounded in size, with errors that say what to send."""
from typing import TYPE_CHECKING, Any, Dict

if TYPE_CHECKING:
    import starlette.requests

__all__ = ['FIELD', 'HOW_TO_SEND', 'UPLOAD_BODY', 'read_upload']

#: the multipart field that holds the image (``curl -F file=@cat.jpg``)
FIELD = 'file'
HOW_TO_SEND = (f'send one image as the multipart field {FIELD!r} (curl -F {FIELD}=@image.jpg) or as the raw '
               'request body (curl --data-binary @image.jpg)')
#: the request body in the OpenAPI schema: FastAPI cannot infer it, since the endpoint reads the stream itself
UPLOAD_BODY: Dict[str, Any] = {'requestBody': {'required': True, 'content': {
    'multipart/form-data': {'schema': {'type': 'object', 'required': [FIELD],
                                       'properties': {FIELD: {'type': 'string', 'format': 'binary'}}}},
    'application/octet-stream': {'schema': {'type': 'string', 'format': 'binary'}},
    'image/*': {'schema': {'type': 'string', 'format': 'binary'}}}}}


async def read_upload(request: 'starlette.requests.Request', max_bytes: int) -> bytes:
    """The image's bytes: the multipart field ``file`` or the whole body, refused past ``max_bytes``."""
    from fastapi import HTTPException
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request

    too_large = HTTPException(413, f'upload larger than the limit of {max_bytes:,} bytes; send a smaller image')
    if int(request.headers.get('content-length') or 0) > max_bytes:
        raise too_large  # refused before reading it
    body, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: a chunked upload has no Content-Length
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        body.append(chunk)
    data = b''.join(body)
    if not request.headers.get('content-type', '').startswith('multipart/form-data'):
        return data

    async def replay() -> Dict[str, Any]:
        return {'type': 'http.request', 'body': data, 'more_body': False}
    try:
        async with Request(request.scope, replay).form(max_files=1, max_fields=8) as form:
            upload = form.get(FIELD)
            if upload is None or isinstance(upload, str):
                raise HTTPException(400, f'no file in the multipart field {FIELD!r} (got fields: '
                                         f'{", ".join(form.keys()) or "none"}); send it as curl -F {FIELD}=@image.jpg')
            return await upload.read()
    except StarletteHTTPException as e:  # Starlette's own words ("Missing boundary in multipart.", "Too many files")
        if isinstance(e, HTTPException):
            raise
        raise HTTPException(e.status_code, f'{str(e.detail).rstrip(".")}: {HOW_TO_SEND}') from None
