# Stand-in for the absent `transformers` package, for timing llama.cpp's convert_hf_to_gguf.py on an
# OpenELM folder. OpenELM's config needs remote code, which the converter refuses to load
# (trust_remote_code=False): with the real package AutoConfig raises and the converter reads
# config.json itself. This stand-in raises the same way; the tokenizer is read with sentencepiece.
class AutoConfig:
    @staticmethod
    def from_pretrained(*args, **kwargs):
        raise ValueError("transformers is not installed here (stand-in): read config.json")

class AutoTokenizer:
    @staticmethod
    def from_pretrained(*args, **kwargs):
        raise ImportError("transformers is not installed here (stand-in)")
