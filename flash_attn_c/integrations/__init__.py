"""Integrations of flash_attn_c with other libraries.

Each integration lives in its own submodule and is imported explicitly, so that importing
``flash_attn_c`` never imports the libraries it integrates with:

    from flash_attn_c.integrations import transformers as fa_c_transformers
    attn_implementation = fa_c_transformers.register()   # Hugging Face transformers
"""
