"""Rewrites a GGUF with every tensor dequantized to F16 (1-D F32 tensors kept), metadata copied.

The f16 model llama.cpp runs in tests/bench/cpu_vs_llamacpp.sh, made from the same GGUF that
scripts/setup_default_model.sh dequantizes for loraserve, with no torch needed (llama.cpp's own
convert_hf_to_gguf.py wants a newer torch than Debian's).
Usage: gguf_dequantize.py SRC.gguf DST.gguf
"""
import sys
import numpy as np
import gguf
from gguf import quants

src, dst = sys.argv[1], sys.argv[2]
r = gguf.GGUFReader(src)
arch = r.fields["general.architecture"].contents()
w = gguf.GGUFWriter(dst, arch)
for name, field in r.fields.items():
    if name.startswith("GGUF.") or name == "general.architecture":
        continue
    vtype = field.types[0]
    val = field.contents()
    if vtype == gguf.GGUFValueType.ARRAY:
        w.add_key_value(name, val, vtype, sub_type=field.types[-1])
    else:
        w.add_key_value(name, val, vtype)
for t in r.tensors:
    data = quants.dequantize(t.data, t.tensor_type)
    shape = list(reversed([int(x) for x in t.shape]))  # numpy order
    data = data.reshape(shape)
    if t.tensor_type == gguf.GGMLQuantizationType.F32 and data.ndim == 1:
        w.add_tensor(t.name, data.astype(np.float32))
    else:
        w.add_tensor(t.name, data.astype(np.float16))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote", dst)
