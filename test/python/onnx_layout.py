"""Inspect or rewrite an ONNX model's weight layout (tests of the Transpose-free export).

Usage:
  onnx_layout.py describe MODEL.onnx          one JSON line: how MatMul/Gemm/Gather/Transpose use initializers
  onnx_layout.py legacy MODEL.onnx OUT.onnx   rewrite into the older layout: MatMul weights stored
                                              [out, in] behind a Transpose node, no metadata entry
"""
import json
import sys

import onnx
from onnx import helper, numpy_helper

cmd, path = sys.argv[1], sys.argv[2]
model = onnx.load(path)
inits = {i.name: i for i in model.graph.initializer}

if cmd == "describe":
    out = {"metadata": {p.key: p.value for p in model.metadata_props},
           "matmul_b": [], "transpose_of_initializer": [], "gemm": [], "gather": [], "cast_of_initializer": 0,
           "ops": sorted({n.op_type for n in model.graph.node})}
    for n in model.graph.node:
        if n.op_type in ("MatMul",) and n.input[1] in inits:
            out["matmul_b"].append([n.input[1], list(inits[n.input[1]].dims)])
        if n.op_type == "Transpose" and n.input[0] in inits:
            out["transpose_of_initializer"].append(n.input[0])
        if n.op_type == "Cast" and n.input[0] in inits:
            out["cast_of_initializer"] += 1
        if n.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            out["gemm"].append([n.input[1], list(inits[n.input[1]].dims) if n.input[1] in inits else None, attrs.get("transB", 0)])
        if n.op_type == "Gather" and n.input[0] in inits:
            out["gather"].append([n.input[0], list(inits[n.input[0]].dims)])
    print(json.dumps(out))
elif cmd == "legacy":
    for n in list(model.graph.node):
        if n.op_type == "MatMul" and n.input[1] in inits:
            init = inits[n.input[1]]
            arr = numpy_helper.to_array(init).T.copy()
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
            t = helper.make_node("Transpose", [init.name], [init.name + "_t"], perm=[1, 0], name=init.name + "_transpose")
            model.graph.node.insert(list(model.graph.node).index(n), t)
            n.input[1] = init.name + "_t"
    del model.metadata_props[:]
    onnx.save(model, sys.argv[3])
