"""Loaded by every Python process a test starts with this folder on PYTHONPATH: when
AWS_CALLS_LOG names a folder, each AWS operation the process calls through botocore is
written there (one line `ServiceId:Operation` per call, one file per process), from
botocore's own `before-call` event, for the IAM policy test."""

import os

_folder = os.environ.get("AWS_CALLS_LOG")
if _folder:
    import botocore.session

    _init = botocore.session.Session.__init__

    def _record(model: object, **_: object) -> None:
        service = model.service_model.service_id  # type: ignore[attr-defined]
        with open(os.path.join(_folder, f"{os.getpid()}.log"), "a") as log:
            log.write(f"{service}:{model.name}\n")  # type: ignore[attr-defined]

    def _init_recording(self: botocore.session.Session, *args: object, **kwargs: object) -> None:
        _init(self, *args, **kwargs)
        self.register("before-call", _record)

    botocore.session.Session.__init__ = _init_recording  # type: ignore[method-assign]
