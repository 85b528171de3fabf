"""Run Debian's onnx checker on each model path given; print one JSON line per model.

Usage: onnx_check.py MODEL.onnx [...]   (external data is resolved next to each model)
"""
import json
import os
import sys

import onnx

for path in sys.argv[1:]:
    result = {"path": path}
    try:
        # check_model(path, full_check=True) rewrites the file with inferred shapes (onnx 1.12),
        # so check a loaded copy; past protobuf's 2 GiB only the path form works (no full check).
        size = os.path.getsize(path) + sum(os.path.getsize(os.path.join(os.path.dirname(path), f))
                                           for f in os.listdir(os.path.dirname(path)) if f.endswith("_data"))
        if size < 2**31 - 1:
            onnx.checker.check_model(onnx.load(path), full_check=True)
        else:
            onnx.checker.check_model(path)
        model = onnx.load(path, load_external_data=False)
        result.update(ok=True, ir_version=model.ir_version,
                      opsets={o.domain: o.version for o in model.opset_import},
                      inputs=[[i.name, [d.dim_value if d.HasField("dim_value") else d.dim_param
                                        for d in i.type.tensor_type.shape.dim]] for i in model.graph.input],
                      outputs=[o.name for o in model.graph.output])
    except Exception as error:  # report, don't crash: the test asserts on ok
        result.update(ok=False, error=str(error).splitlines()[0] if str(error) else repr(error))
    print(json.dumps(result))
