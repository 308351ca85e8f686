"""Opt-in drop-in for flash-attn 2.8: after ``import flash_attn_c.compat``, code that imports
``flash_attn`` runs unchanged on flash_attn_c. Nothing is registered without this import.

Modules registered (in sys.modules, built from flash_attn_c's functions):
    flash_attn                          the 7 public functions, __version__ = "2.8.3"
    flash_attn.flash_attn_interface     the public functions, the private _flash_attn_forward /
                                        _flash_attn_varlen_forward / _flash_attn_backward /
                                        _flash_attn_varlen_backward (flash_attn_c._compat_impl),
                                        FlashAttn*Func classes whose .apply calls the functions
    flash_attn.bert_padding             index_first_axis, index_put_first_axis,
                                        index_first_axis_residual, unpad_input, pad_input,
                                        unpad_input_for_concatenated_sequences, IndexFirstAxis,
                                        IndexPutFirstAxis, IndexFirstAxisResidual (.apply)
    flash_attn.layers, flash_attn.layers.rotary
                                        apply_rotary_emb(_func, _qkv_, _kv_, _torch), rotate_half,
                                        RotaryEmbedding (flash_attn_c.rotary: fused C / CUDA),
                                        ApplyRotaryEmb, ApplyRotaryEmbQKV_, ApplyRotaryEmbKV_ (.apply)
Any other ``flash_attn.*`` import fails with Python's ModuleNotFoundError naming it (a finder that
listed what is served would also break find_spec probes, which expect None); docs/compat.md lists it.

If a real flash-attn is installed (a distribution, an importable ``flash_attn`` package, or one
already imported) this import raises ImportError instead of shadowing it. Importing it again
is a no-op. See docs/compat.md.
"""
import importlib.machinery
import importlib.metadata
import importlib.util
import sys
import types
from typing import Dict, Optional

from . import _compat_impl, bert_padding, interface, kvcache, rotary

FLASH_ATTN_VERSION = "2.8.3"  # the flash-attn release whose API is served
_MARK = "__flash_attn_c_compat__"

_PUBLIC = {
    "flash_attn_func": interface.flash_attn_func,
    "flash_attn_kvpacked_func": interface.flash_attn_kvpacked_func,
    "flash_attn_qkvpacked_func": interface.flash_attn_qkvpacked_func,
    "flash_attn_varlen_func": interface.flash_attn_varlen_func,
    "flash_attn_varlen_kvpacked_func": interface.flash_attn_varlen_kvpacked_func,
    "flash_attn_varlen_qkvpacked_func": interface.flash_attn_varlen_qkvpacked_func,
    "flash_attn_with_kvcache": kvcache.flash_attn_with_kvcache,
}

_PRIVATE = {
    "_flash_attn_forward": _compat_impl._flash_attn_forward,
    "_flash_attn_varlen_forward": _compat_impl._flash_attn_varlen_forward,
    "_flash_attn_backward": _compat_impl._flash_attn_backward,
    "_flash_attn_varlen_backward": _compat_impl._flash_attn_varlen_backward,
}
# flash-attn >= 2.6 calls these through torch.ops wrappers of the same signatures; some callers
# import the wrapper names.
_PRIVATE.update({"_wrapped" + name: fn for name, fn in _PRIVATE.items()})

# flash-attn's autograd.Function classes, for code that calls Class.apply(...) itself
_ATTN = "dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic, return_softmax"
_FUNCTION_CLASSES = {name: _compat_impl._function_class(name, fn, params) for name, fn, params in (
    ("FlashAttnFunc", interface.flash_attn_func, "q, k, v, " + _ATTN),
    ("FlashAttnQKVPackedFunc", interface.flash_attn_qkvpacked_func, "qkv, " + _ATTN),
    ("FlashAttnKVPackedFunc", interface.flash_attn_kvpacked_func, "q, kv, " + _ATTN),
    ("FlashAttnVarlenFunc", interface.flash_attn_varlen_func,
     "q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, " + _ATTN + ", block_table"),
    ("FlashAttnVarlenQKVPackedFunc", interface.flash_attn_varlen_qkvpacked_func,
     "qkv, cu_seqlens, max_seqlen, " + _ATTN),
    ("FlashAttnVarlenKVPackedFunc", interface.flash_attn_varlen_kvpacked_func,
     "q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, " + _ATTN),
)}
_PADDING_CLASSES = {name: _compat_impl._function_class(name, fn, params) for name, fn, params in (
    ("IndexFirstAxis", bert_padding.index_first_axis, "input, indices"),
    ("IndexPutFirstAxis", bert_padding.index_put_first_axis, "values, indices, first_axis_dim"),
    ("IndexFirstAxisResidual", _compat_impl.index_first_axis_residual, "input, indices"),
)}
_ROTARY_CLASSES = {name: _compat_impl._function_class(name, fn, params) for name, fn, params in (
    ("ApplyRotaryEmb", rotary.apply_rotary_emb,
     "x, cos, sin, interleaved, inplace, seqlen_offsets, cu_seqlens, max_seqlen"),
    ("ApplyRotaryEmbQKV_", rotary.apply_rotary_emb_qkv_,
     "qkv, cos, sin, cos_k, sin_k, interleaved, seqlen_offsets, num_heads_q"),
    ("ApplyRotaryEmbKV_", rotary.apply_rotary_emb_kv_, "kv, cos, sin, interleaved, seqlen_offsets"),
)}

_BERT_PADDING = {
    "index_first_axis": bert_padding.index_first_axis,
    "index_put_first_axis": bert_padding.index_put_first_axis,
    "index_first_axis_residual": _compat_impl.index_first_axis_residual,
    "unpad_input": bert_padding.unpad_input,
    "pad_input": bert_padding.pad_input,
    "unpad_input_for_concatenated_sequences": _compat_impl.unpad_input_for_concatenated_sequences,
}

_ROTARY = {name: getattr(rotary, name) for name in rotary.__all__}

_MODULES = ("flash_attn", "flash_attn.flash_attn_interface", "flash_attn.bert_padding",
            "flash_attn.layers", "flash_attn.layers.rotary")


def _real_flash_attn() -> Optional[str]:
    """Where a real flash-attn lives, or None. Checked before anything is registered."""
    mod = sys.modules.get("flash_attn")
    if mod is not None:
        return f"a flash_attn module is already imported (from {getattr(mod, '__file__', None)!r})"
    for dist_name in ("flash-attn", "flash_attn"):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return f"the distribution {dist.metadata['Name']} {dist.version} is installed"
    spec = importlib.util.find_spec("flash_attn")
    if spec is not None:
        where = spec.origin or list(spec.submodule_search_locations or [])
        return f"a flash_attn package is importable (from {where!r})"
    return None


def _module(name: str, attrs: Dict[str, object], doc: str, package: bool) -> types.ModuleType:
    mod = types.ModuleType(name, doc)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        mod.__path__ = []  # a package, so `import flash_attn.x` looks x up in sys.modules
    mod.__package__ = name if package else name.rpartition(".")[0]
    mod.__file__ = __file__
    setattr(mod, _MARK, True)
    for key, value in attrs.items():
        setattr(mod, key, value)
    mod.__all__ = [k for k in attrs if not k.startswith("_")]
    return mod


def _install() -> None:
    if getattr(sys.modules.get("flash_attn"), _MARK, False):
        return  # already installed: importing compat again is a no-op
    real = _real_flash_attn()
    if real is not None:
        raise ImportError(
            f"flash_attn_c.compat refuses to shadow a real flash-attn: {real}. Use that flash-attn, "
            "or uninstall it (pip uninstall flash-attn) to run `import flash_attn` code on "
            "flash_attn_c; flash_attn_c's own API (import flash_attn_c) works either way.")
    from . import __version__ as ours
    iface = _module("flash_attn.flash_attn_interface", {**_PUBLIC, **_PRIVATE, **_FUNCTION_CLASSES},
                    "flash_attn.flash_attn_interface served by flash_attn_c", False)
    padding = _module("flash_attn.bert_padding", {**_BERT_PADDING, **_PADDING_CLASSES},
                      "flash_attn.bert_padding served by flash_attn_c", False)
    rot = _module("flash_attn.layers.rotary", {**_ROTARY, **_ROTARY_CLASSES},
                  "flash_attn.layers.rotary served by flash_attn_c (fused C / CUDA rotary)", False)
    layers = _module("flash_attn.layers", {"rotary": rot}, "flash_attn.layers served by flash_attn_c",
                     True)
    top = _module("flash_attn", {**_PUBLIC, "__version__": FLASH_ATTN_VERSION,
                                 "__flash_attn_c_version__": ours, "flash_attn_interface": iface,
                                 "bert_padding": padding, "layers": layers},
                  f"flash-attn {FLASH_ATTN_VERSION} API served by flash_attn_c {ours}", True)
    top.__all__ = list(_PUBLIC)
    layers.__all__ = ["rotary"]
    for mod in (top, iface, padding, layers, rot):
        sys.modules[mod.__name__] = mod


_install()
