import json


def json_dumps_safer(obj, **kwargs):
    return json.dumps(obj, default=str, **kwargs)
