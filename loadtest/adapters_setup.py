"""Generated PEFT adapters for load tests: written fast with numpy (no torch), uploaded to a
loraserve server over its admin gRPC API, and removed again after the run.

The files are what PEFT writes for a LoRA on a Llama-family model: adapter_config.json
(peft_type LORA, r, lora_alpha, target_modules) and adapter_model.safetensors with
`base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A,B}.weight` in float32
(or, with dtype "f16"/"bf16", the same values rounded to 16 bits: half the bytes).
A and B are small seeded uniform draws (mean 0, the std of a normal init), so every adapter changes
the logits a little and differently.
"""
import asyncio
import hashlib
import json
import os
import struct
from typing import Dict, List, Sequence, Tuple

import numpy as np

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
CHUNK = 1 << 20


def module_shapes(config: dict) -> Dict[str, Tuple[int, int]]:
    """(in_features, out_features) of each LoRA-able Llama module, from config.json."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads") or heads
    inter = config["intermediate_size"]
    return {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv * head_dim),
            "v_proj": (hidden, kv * head_dim), "o_proj": (heads * head_dim, hidden),
            "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
            "down_proj": (inter, hidden)}


DTYPES = ("f32", "f16", "bf16")  # make_adapter's dtype: the safetensors F32, F16, BF16


def tensor_bytes(array: np.ndarray, dtype: str = "f32") -> Tuple[str, bytes]:
    """(safetensors dtype name, little-endian bytes) of a float tensor stored as dtype; bf16 is
    float32 rounded to nearest even on the upper 16 bits (what torch's .to(bfloat16) does)."""
    values = np.ascontiguousarray(array, dtype="<f4")
    if dtype == "f32":
        return "F32", values.tobytes()
    if dtype == "f16":
        return "F16", values.astype("<f2").tobytes()
    if dtype == "bf16":
        bits = values.view("<u4").astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return "BF16", rounded.astype("<u2").tobytes()
    raise ValueError(f"adapter dtype '{dtype}' is not one of {', '.join(DTYPES)}")


def safetensors_bytes(tensors: Dict[str, np.ndarray], dtype: str = "f32") -> bytes:
    """The safetensors file of the tensors stored as dtype (f32, f16 or bf16), the header JSON
    padded to 8 bytes."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        kind, data = tensor_bytes(tensors[name], dtype)
        header[name] = {"dtype": kind, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def uniform(rng, shape, std: float) -> np.ndarray:
    """float32 draws of mean 0 and standard deviation `std`, uniform rather than normal: a fifth
    of the time of float64 normals, which matters when a benchmark makes thousands of adapters
    on the machine it loads (the kernels do not care how the weights are distributed)."""
    half_width = np.float32(std * np.sqrt(3.0))
    out = rng.random(shape, dtype=np.float32)
    out -= np.float32(0.5)
    out *= 2 * half_width
    return out


def make_adapter(config: dict, seed: int, rank: int = 8,
                 targets: Sequence[str] = ("q_proj", "v_proj"),
                 dtype: str = "f32", b_std: float = 0.02) -> Dict[str, bytes]:
    """The two files of one adapter, deterministic from the seed; dtype (f32, f16, bf16) is how
    the weights are stored (the same draws, rounded); b_std scales lora_B (larger: adapters
    whose greedy answers differ more from the base model's and from each other)."""
    if dtype not in DTYPES:
        raise ValueError(f"adapter dtype '{dtype}' is not one of {', '.join(DTYPES)}")
    shapes = module_shapes(config)
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise ValueError(f"--create-targets: {', '.join(unknown)} not in {', '.join(shapes)}")
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for module in targets:
            fan_in, fan_out = shapes[module]
            block = "self_attn" if module in ATTENTION else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{block}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = uniform(rng, (rank, fan_in), 1 / np.sqrt(fan_in))
            tensors[f"{prefix}.lora_B.weight"] = uniform(rng, (fan_out, rank), b_std)
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
        "lora_dropout": 0.0, "bias": "none", "target_modules": list(targets),
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "base_model_name_or_path": config.get("_name_or_path", ""),
    }
    return {"adapter_config.json": json.dumps(adapter_config, indent=1).encode(),
            "adapter_model.safetensors": safetensors_bytes(tensors, dtype)}


def write_adapter(folder: str, files: Dict[str, bytes]) -> None:
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def upload_messages(apb, adapter_id: str, files: Dict[str, bytes]):
    yield apb.UploadAdapterRequest(header=apb.UploadHeader(
        adapter_id=adapter_id, format=apb.ADAPTER_FORMAT_PEFT,
        sha256=hashlib.sha256(files["adapter_model.safetensors"]).hexdigest(),
        total_bytes=sum(len(d) for d in files.values())))
    for name, data in files.items():
        for off in range(0, len(data), CHUNK):
            yield apb.UploadAdapterRequest(chunk=apb.FileChunk(
                file_name=name, offset=off, data=data[off:off + CHUNK]))


async def upload_generated(channel, stubs, admin_token: str, config: dict, count: int,
                           prefix: str = "lt-gen-", rank: int = 8,
                           targets: Sequence[str] = ("q_proj", "v_proj"), seed: int = 0,
                           parallel: int = 4, dtype: str = "f32",
                           b_std: float = 0.02) -> Tuple[List[str], float]:
    """Uploads `count` generated adapters (ids prefix0000...) over `parallel` streams, each
    generated in memory just before it is sent; returns the ids and the seconds the uploads
    took. An id that already exists (a rerun) is kept as it is."""
    import grpc
    import time

    apb = stubs.admin_pb2
    admin = stubs.admin_pb2_grpc.AdminStub(channel)
    auth = (("authorization", f"Bearer {admin_token}"),)
    width = max(4, len(str(count - 1)))
    ids = [f"{prefix}{i:0{width}d}" for i in range(count)]
    queue = asyncio.Queue()
    for i, adapter_id in enumerate(ids):
        queue.put_nowait((i, adapter_id))

    async def worker():
        while not queue.empty():
            i, adapter_id = queue.get_nowait()
            files = make_adapter(config, seed * 1_000_003 + i, rank, targets, dtype, b_std)
            try:
                await admin.UploadAdapter(upload_messages(apb, adapter_id, files),
                                          metadata=auth, timeout=120)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise RuntimeError(f"uploading {adapter_id}: {error.code().name}: "
                                       f"{error.details()}") from None

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, parallel))))
    return ids, time.perf_counter() - started


async def remove(channel, stubs, admin_token: str, ids: Sequence[str], parallel: int = 8):
    apb = stubs.admin_pb2
    admin = stubs.admin_pb2_grpc.AdminStub(channel)
    auth = (("authorization", f"Bearer {admin_token}"),)
    queue = list(ids)

    async def worker():
        import grpc

        while queue:
            adapter_id = queue.pop()
            try:
                await admin.UnloadAdapter(apb.UnloadAdapterRequest(adapter_id=adapter_id),
                                          metadata=auth, timeout=60)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise

    await asyncio.gather(*(worker() for _ in range(max(1, parallel))))
